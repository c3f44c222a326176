"""``anomalib-ncd predict``: classify new images with a discovery run's model and its detector."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_ncd.commands.config import CONFIG_FILE, config_yaml
from anomalib_ncd.data.image_io import check_image_sizes
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.folder import IMAGE_SUFFIXES
from anomalib_ncd.results import next_version_dir, read_run_state, resolve_run

if TYPE_CHECKING:
    from anomalib_ncd.discovery.classification import ImageClassification
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.maps.map_set import AnomalyMapSet

logger = logging.getLogger("anomalib_ncd")

CHECKPOINT = Path("weights") / "lightning" / "model.ckpt"
RUN_COMMANDS = ("discover", "add", "review")  # runs that end with a discovery model


@dataclass(frozen=True)
class RunDetector:
    """How ``predict`` and ``add`` load the run's detector (the checkpoint recorded in ``run.json``).

    Attributes:
        model: the detector's model class (``Patchcore``, ``anomalib_ncd.models.Prn``...). Default:
            the class recorded in the run, else the one named by the checkpoint's ``results/<Model>/``
            path.
        trust_checkpoint: load the detector checkpoint even when it needs types outside the
            allow-list of safe types (``torch.load(weights_only=False)``). RISK: unpickling such a file
            can run arbitrary code on this machine; only for a checkpoint you made yourself or got from
            a source you trust. Off: it is read as tensors and plain data only, and refused otherwise.
    """

    model: str | None = None
    trust_checkpoint: bool = False


def predict(
    run: str,
    images: str,
    maps: str | None = None,
    detector: RunDetector = RunDetector(),
    output: str | None = None,
    overlays: bool = False,
    batch_size: int = 32,
    accelerator: str = "auto",
    devices: int = 1,
) -> Path:
    """Classify new images: per image its class (known, discovered, normal or unknown), per region its class.

    ``unknown`` images and regions fit none of the model's classes (:mod:`~anomalib_ncd.discovery.novelty`):
    their ``class_name`` is ``unknown``, ``pred_class`` keeps the nearest class, and ``unknown_score``
    and ``region_unknown_scores`` say how atypical they are.

    Args:
        run: a completed ``discover`` run folder (or its ``latest`` link).
        images: an image file or a folder of images (searched recursively).
        maps: saved raw maps of these images (``index.csv`` folder); needed when the run was
            discovered from saved maps and so has no detector.
        detector: the run's detector: its model class (when the run does not record it) and
            whether to trust a checkpoint that needs more than plain data.
        output: output folder (default: ``<run>/predictions/vN``).
        overlays: also write, per image, its anomaly-map overlay with region boxes and classes.
        batch_size: regions per forward pass.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``...).
        devices: number of devices.

    Returns:
        The output folder, with ``predictions.csv`` and ``predictions.json``.

    Raises:
        ValueError: when the run is not a completed discovery run, or its checkpoint or the detector's
            is unusable (corrupt, not a checkpoint, or needing types outside the allow-list).
    """
    arguments = dict(locals())
    run_dir, state = completed_run(run)
    image_files = list_images(images)
    check_image_sizes(image_files)
    model = load_run_model(run_dir)  # before the detector runs: a bad run checkpoint fails fast
    map_set = maps_of_images(image_files, maps, state, detector, accelerator, devices)
    from anomalib_ncd.pipeline.estimator import DefectDiscovery

    discovery = DefectDiscovery(model, accelerator=accelerator, devices=devices)
    found = discovery.classify(map_set, batch_size=batch_size)
    from anomalib_ncd.pipeline.tables import assignments_table

    table = assignments_table(map_set, found, model.class_names)
    folder = Path(output) if output is not None else next_version_dir(run_dir / "predictions")
    if overlays:
        map_range = model.fitted_mebin().fitted_range()
        _write_overlays(folder / "overlays", map_set, found, model.class_names, map_range)
    atomic_write_text(folder / "predictions.csv", table.to_csv(index=False))
    records = json.loads(table.to_json(orient="records"))
    for record in records:
        for key in (
            "region_boxes",
            "region_classes",
            "region_confidences",
            "region_scores",
            "region_unknown",
            "region_unknown_scores",
        ):
            record[key] = json.loads(record[key])
    atomic_write_text(folder / "predictions.json", json.dumps(records, indent=2))
    atomic_write_text(folder / CONFIG_FILE, config_yaml(arguments))
    counts = table["class_name"].value_counts().to_dict()
    print(f"{len(table)} images classified ({', '.join(f'{k}: {v}' for k, v in counts.items())}); results in {folder}")
    return folder


def list_images(images: str | Path) -> list[Path]:
    """Image files of a path: the file itself, or every image under a folder (sorted).

    Args:
        images: a file or folder.

    Returns:
        The image files.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when the folder holds no image.
    """
    path = Path(images)
    if path.is_file():
        return [path.resolve()]
    if not path.is_dir():
        msg = f"image file or folder not found: {path}"
        raise FileNotFoundError(msg)
    files = sorted(p.resolve() for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        msg = f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}"
        raise ValueError(msg)
    return files


def completed_run(run: str | Path) -> tuple[Path, dict[str, Any]]:
    """A finished run that holds a discovery model (``discover``, ``add`` or ``review``), and its state.

    Args:
        run: the run folder or its ``latest`` link.

    Returns:
        ``(run folder, run.json's content)``.

    Raises:
        ValueError: when the run did not complete or is not one of those commands.
    """
    run_dir = resolve_run(run)
    state = read_run_state(run_dir)
    if state.get("command") not in RUN_COMMANDS or not state.get("complete"):
        msg = f"{run_dir} is not a completed discover, add or review run"
        raise ValueError(msg)
    return run_dir, state


def load_run_model(run_dir: Path) -> AnomalyNCD:
    """The discovery model of a run, read as data (:meth:`AnomalyNCD.load_from_checkpoint`).

    Args:
        run_dir: the run folder.

    Returns:
        The model.

    Raises:
        FileNotFoundError: when the run has no checkpoint.
        ValueError: when the checkpoint is corrupt, not an AnomalyNCD checkpoint, or needs types
            outside the allow-list.
    """
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

    path = run_dir / CHECKPOINT
    if not path.is_file():
        msg = f"{run_dir} has no model checkpoint ({CHECKPOINT})"
        raise FileNotFoundError(msg)
    return AnomalyNCD.load_from_checkpoint(str(path), map_location="cpu")


def maps_of_images(
    image_files: list[Path],
    maps: str | None,
    state: dict[str, Any],
    detector: RunDetector,
    accelerator: str,
    devices: int,
) -> AnomalyMapSet:
    """Raw anomaly maps of new images: from a saved maps folder, or by running the run's detector.

    Args:
        image_files: the images.
        maps: a saved maps folder (``index.csv``) of these images, or ``None``.
        state: the run's ``run.json`` (its ``detector_checkpoint`` is ``None`` when it was discovered
            from saved maps; its ``detector_model`` names the detector's class; its
            ``detector_input`` says how the run fed images to it: ``image_size`` and ``letterbox``,
            by default the checkpoint's own input size, squashed).
        detector: the model class override and the trust opt-in.
        accelerator: Lightning accelerator of the detector.
        devices: number of devices.

    Returns:
        The map set (no ground truth).

    Raises:
        ValueError: when there are neither maps nor a detector, or the detector checkpoint is unusable.
    """
    from anomalib_ncd.data.samples import make_sample_table
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    samples = make_sample_table(
        {"image_path": str(path), "defect_type": "unknown", "is_normal": False, "split": "test"} for path in image_files
    )
    detector_checkpoint = state.get("detector_checkpoint")
    if maps is not None:
        map_set = load_map_folder(maps, samples=samples)
    elif detector_checkpoint is None:
        msg = "this run was discovered from saved maps and has no detector: give the new images' maps with --maps"
        raise ValueError(msg)
    else:
        from anomalib_ncd.commands.detector_maps import detector_maps_of, input_size

        model = detector.model or state.get("detector_model")
        loaded = load_anomalib_model(detector_checkpoint, model, trust_checkpoint=detector.trust_checkpoint)
        recorded = state.get("detector_input") or {}
        image_size = recorded.get("image_size") or input_size(loaded) or 256
        size = tuple(image_size) if isinstance(image_size, list) else image_size
        letterbox = bool(recorded.get("letterbox", False))
        # anomalib's engine root, and the visualiser a checkpoint brings back, stay out of the working folder
        loaded.visualizer = None
        with tempfile.TemporaryDirectory(prefix="anomalib_ncd_predict_") as engine_root:
            map_set = detector_maps_of(
                loaded, samples, "predict", "", size, letterbox, accelerator, devices, Path(engine_root)
            )
    map_set.defect_types = None  # the placeholder type is not ground truth
    map_set.is_normal = None
    return map_set


def _write_overlays(
    folder: Path,
    map_set: AnomalyMapSet,
    found: ImageClassification,
    class_names: list[str],
    map_range: tuple[float, float],
) -> None:
    """One PNG per image: its anomaly map over it, region boxes in their class colour, its class."""
    import cv2

    from anomalib_ncd.data.image_io import read_image
    from anomalib_ncd.discovery.novelty import UNKNOWN
    from anomalib_ncd.pipeline.tables import region_table
    from anomalib_ncd.regions.extract import write_png
    from anomalib_ncd.report.thumbnails import class_colour, draw_regions, overlay_map

    regions = region_table(map_set, found, class_names)
    for index, path in enumerate(map_set.image_paths):
        image = read_image(path)
        canvas = draw_regions(
            overlay_map(image, map_set.maps[index], map_range), regions[regions["image_index"] == index], (1.0, 1.0)
        )
        unknown = found.is_unknown is not None and bool(found.is_unknown[index])
        label = f"{UNKNOWN if unknown else class_names[int(found.classes[index])]} {found.confidence[index]:.2f}"
        scale = max(image.shape[1] / 640, 0.4)
        cv2.putText(canvas, label, (4, int(18 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                    class_colour(int(found.classes[index])), max(1, round(scale)), cv2.LINE_AA)  # fmt: skip
        write_png(folder / f"{index:06d}_{Path(path).stem}.png", canvas)
