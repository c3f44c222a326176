"""``anomalib-ncd add``: continual discovery, a new batch of images added to a finished run.

Regions of the batch that fit an existing class keep that class's id; groups of new-kind regions
become classes appended after the old ones (:mod:`~anomalib_ncd.discovery.continual`). The run
itself is never changed: the extended model goes to the next version folder beside it,
``<dataset>/<category>/vN+1``, with

- ``weights/lightning/model.ckpt``: the extended model (``predict`` and a further ``add`` use it);
- ``maps/``: the maps of the earlier images followed by the batch's, so the next ``add`` measures
  new-kind against everything seen so far;
- ``assignments.csv``: the earlier rows unchanged, then the batch's rows (column ``batch``);
- ``summary.json``: the appended classes, the new-kind threshold and the share of new-kind regions;
- ``report/index.html``: the batch's classes, appended ones included;
- ``run.json`` (``command: add``, the parent run, the detector and its model class) and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from anomalib_ncd.commands.config import CONFIG_FILE, config_yaml
from anomalib_ncd.commands.new_images import RunDetector, list_images, maps_of_images
from anomalib_ncd.data.image_io import check_image_sizes
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.pipeline.runs import completed_run, load_run_model
from anomalib_ncd.results import RunFolder, mark_latest, next_version_dir, write_run_state

if TYPE_CHECKING:
    import pandas as pd

    from anomalib_ncd.discovery.classification import ImageClassification
    from anomalib_ncd.discovery.continual import ContinualUpdate
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.maps.map_set import AnomalyMapSet

logger = logging.getLogger("anomalib_ncd")


def add(
    run: str,
    images: str,
    maps: str | None = None,
    detector: RunDetector = RunDetector(),
    n_new_classes: int | Literal["auto"] = "auto",
    quantile: float = 0.05,
    min_new_regions: int = 4,
    report: bool = True,
    accelerator: str = "auto",
    devices: int = 1,
) -> Path:
    """Add a batch of new images to a discovery run: old classes keep their ids, new kinds become new classes.

    Args:
        run: a completed ``discover`` (or ``add``) run folder, or its ``latest`` link.
        images: the new batch: an image file or a folder of images (searched recursively).
        maps: saved raw maps of the batch (``index.csv`` folder); needed when the run has no detector.
        detector: the run's detector: its model class (when the run does not record it) and
            whether to trust a checkpoint that needs more than plain data.
        n_new_classes: classes to append, or ``auto`` to estimate it from the new-kind regions.
        quantile: share of the earlier regions that would count as new-kind (the false-alarm rate of
            "new kind"): a batch region is new-kind when it fits the classes less than that share of
            the regions the classes were found in.
        min_new_regions: fewer new-kind regions than this add no class (too few to be a kind).
        report: write the batch's HTML report (``report/index.html``: galleries per class, the
            appended ones included).
        accelerator: Lightning accelerator for the detector (``auto``, ``cpu``, ``gpu``...).
        devices: number of devices.

    Returns:
        The new run folder.
    """
    arguments = dict(locals())
    if n_new_classes != "auto" and n_new_classes < 0:
        msg = f"n_new_classes must be 'auto' or >= 0, got {n_new_classes}"
        raise ValueError(msg)
    run_dir, state = completed_run(run)
    if not RunFolder(run_dir).maps_index.is_file():
        msg = (
            f"{run_dir} has no saved maps ({RunFolder.MAPS}/index.csv): "
            "the new-kind threshold needs the earlier regions"
        )
        raise FileNotFoundError(msg)
    batch_files = list_images(images)
    check_image_sizes(batch_files)
    model = load_run_model(run_dir)  # before the detector runs: a bad run checkpoint fails fast
    batch_maps = maps_of_images(batch_files, maps, state, detector, accelerator, devices)

    from anomalib_ncd.discovery.continual import add_batch
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.regions.extract import SetImages

    earlier = load_map_folder(RunFolder(run_dir).maps)
    earlier_regions = _earlier_regions(model, earlier)
    batch_images = SetImages(batch_maps)  # read one at a time
    update = add_batch(
        model,
        batch_images,
        batch_maps.maps,
        earlier_regions,
        quantile=quantile,
        n_new_classes=None if n_new_classes == "auto" else n_new_classes,
        min_new_regions=min_new_regions,
    )

    from anomalib_ncd.maps.export import save_map_set
    from anomalib_ncd.pipeline.checkpoint import save_model_checkpoint
    from anomalib_ncd.pipeline.tables import assignments_table

    new_run = next_version_dir(run_dir.parent)
    write_run_state(
        new_run,
        command="add",
        stage="started",
        complete=False,
        dataset=state.get("dataset", ""),
        category=state.get("category", ""),
        parent=str(run_dir),
        detector_checkpoint=state.get("detector_checkpoint"),
        detector_input=state.get("detector_input"),
        detector_model=detector.model or state.get("detector_model"),
    )
    atomic_write_text(new_run / CONFIG_FILE, config_yaml(arguments))
    save_model_checkpoint(update.model, RunFolder(new_run).checkpoint)
    save_map_set(_concatenated(earlier, batch_maps), RunFolder(new_run).maps)
    batch_table = assignments_table(batch_maps, update.classification, update.model.class_names)
    atomic_write_text(RunFolder(new_run).assignments, _all_assignments(run_dir, batch_table, new_run.name))
    names = update.model.class_names
    counts = np.bincount(batch_table["pred_class"].to_numpy(), minlength=len(names))
    appended_classes = [names[index] for index in update.new_classes]
    summary = {
        "parent": str(run_dir),
        "batch_images": len(batch_maps),
        "batch_regions": len(update.classification.regions),
        "new_kind_regions": int(update.new_kind.sum()),
        "new_kind_threshold": update.threshold,
        "appended_classes": appended_classes,
        "batch_classes": {name: int(count) for name, count in zip(names, counts, strict=True)},
    }
    atomic_write_text(RunFolder(new_run).summary, json.dumps(summary, indent=2))
    if report:
        _write_batch_report(new_run, batch_maps, batch_table, update, summary)
    write_run_state(new_run, stage="done", complete=True)
    mark_latest(new_run)
    appended = ", ".join(appended_classes) or "none"
    print(
        f"{len(batch_maps)} images added, {summary['new_kind_regions']} new-kind regions, "
        f"classes appended: {appended}; results in {new_run}"
    )
    return new_run


def _earlier_regions(model: AnomalyNCD, map_set: AnomalyMapSet) -> ImageClassification:
    """The regions of the earlier images, cut as at discovery (the model's MEBin range), classified."""
    from anomalib_ncd.regions.extract import SetImages

    return model.classify_images(SetImages(map_set), map_set.maps, progress=True)  # images read one at a time


def _concatenated(first: AnomalyMapSet, second: AnomalyMapSet) -> AnomalyMapSet:
    from anomalib_ncd.maps.map_set import AnomalyMapSet

    return AnomalyMapSet(
        maps=[*first.maps, *second.maps],
        image_paths=[*first.image_paths, *second.image_paths],
        image_shapes=[*first.image_shapes, *second.image_shapes],
    )


def _all_assignments(run_dir: Path, batch_table: pd.DataFrame, batch_name: str) -> str:
    """The earlier run's rows as they were, then the batch's, as CSV text."""
    import pandas as pd

    earlier = pd.read_csv(RunFolder(run_dir).assignments)
    if "batch" not in earlier.columns:
        earlier.insert(0, "batch", run_dir.name)
    batch = batch_table.copy()
    batch.insert(0, "batch", batch_name)
    return pd.concat([earlier, batch], ignore_index=True).to_csv(index=False)


def _write_batch_report(
    run: Path, batch_maps: AnomalyMapSet, batch_table: pd.DataFrame, update: ContinualUpdate, summary: dict
) -> Path:
    """The HTML report of the batch: its images by class (old and appended) and the settings."""
    from anomalib_ncd.pipeline.tables import region_table
    from anomalib_ncd.report import ReportData, write_report

    model = update.model
    images = batch_table.copy()
    images["defect_type"] = None
    data = ReportData(
        title=f"{run.parent.name} - {run.name}: batch added to {Path(summary['parent']).name}",
        images=images,
        regions=region_table(batch_maps, update.classification, model.class_names),
        maps=batch_maps.maps,
        map_range=model.fitted_mebin().fitted_range(),
        class_names=model.class_names,
        features=update.classification.region_features,
        settings=summary | {"model": model.settings_dict()},
        object_prior=model.object_prior,
    )
    return write_report(data, RunFolder(run).report)
