"""New images of a finished run and their raw anomaly maps: what ``predict`` and ``add`` take in.

The maps come from a saved maps folder, or from the run's own detector (the checkpoint recorded in
``run.json``), run the way the run ran it (input size, letterbox).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_ncd.maps.folder import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import pandas as pd

    from anomalib_ncd.maps.map_set import AnomalyMapSet


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
        state: the run's ``run.json`` (see :class:`DetectorMaps`).
        detector: the model class override and the trust opt-in.
        accelerator: Lightning accelerator of the detector.
        devices: number of devices.

    Returns:
        The map set (no ground truth).

    Raises:
        ValueError: when there are neither maps nor a detector, or the detector checkpoint is unusable.
    """
    return DetectorMaps(maps, state, detector, accelerator, devices, image_files)(image_files)


class DetectorMaps:
    """Raw anomaly maps of new images, chunk by chunk: from saved maps, or from the run's detector.

    The detector is loaded once, when this is made, and runs on each list of images it is called with.
    Saved maps are read once, for every image of ``image_files``, and handed out by image.

    Args:
        maps: a saved maps folder (``index.csv``) of the images, or ``None``.
        state: the run's ``run.json`` (its ``detector_checkpoint`` is ``None`` when it was discovered
            from saved maps; its ``detector_model`` names the detector's class; its
            ``detector_input`` says how the run fed images to it: ``image_size`` and ``letterbox``,
            by default the checkpoint's own input size, squashed).
        detector: the model class override and the trust opt-in.
        accelerator: Lightning accelerator of the detector.
        devices: number of devices.
        image_files: every image the saved maps will be asked for (with ``maps``).

    Raises:
        ValueError: when there are neither maps nor a detector, or the detector checkpoint is unusable.
    """

    def __init__(
        self,
        maps: str | None,
        state: dict[str, Any],
        detector: RunDetector,
        accelerator: str,
        devices: int,
        image_files: list[Path] | None = None,
    ) -> None:
        from anomalib_ncd.maps.folder import load_map_folder
        from anomalib_ncd.maps.from_anomalib import load_anomalib_model
        from anomalib_ncd.maps.map_set import MapError

        self.accelerator, self.devices = accelerator, devices
        self.loaded: Any = None
        self.saved: AnomalyMapSet | None = None
        detector_checkpoint = state.get("detector_checkpoint")
        if maps is not None:
            self.saved = load_map_folder(maps, samples=_samples(image_files or []))
            self.saved_rows = {str(Path(path).resolve()): row for row, path in enumerate(self.saved.image_paths)}
            missing = [path for path in image_files or [] if str(Path(path).resolve()) not in self.saved_rows]
            if missing:
                shown = ", ".join(str(path) for path in missing[:3]) + (" ..." if len(missing) > 3 else "")
                msg = f"{len(missing)} images have no map in {maps}: {shown}"
                raise MapError(msg)
            return
        if detector_checkpoint is None:
            msg = "this run was discovered from saved maps and has no detector: give the new images' maps with --maps"
            raise ValueError(msg)
        from anomalib_ncd.commands.detector_maps import input_size

        model = detector.model or state.get("detector_model")
        self.loaded = load_anomalib_model(detector_checkpoint, model, trust_checkpoint=detector.trust_checkpoint)
        recorded = state.get("detector_input") or {}
        image_size = recorded.get("image_size") or input_size(self.loaded) or 256
        self.size = tuple(image_size) if isinstance(image_size, list) else image_size
        self.letterbox = bool(recorded.get("letterbox", False))
        # the visualiser a checkpoint brings back would write into the working folder
        self.loaded.visualizer = None

    def __call__(self, image_files: list[Path]) -> AnomalyMapSet:
        """The maps of these images (no ground truth).

        Args:
            image_files: the images.

        Returns:
            The map set.
        """
        if self.saved is not None:
            map_set = self.saved.subset([self.saved_rows[str(Path(path).resolve())] for path in image_files])
        else:
            from anomalib_ncd.commands.detector_maps import detector_maps_of

            with tempfile.TemporaryDirectory(prefix="anomalib_ncd_predict_") as engine_root:  # anomalib's engine root
                map_set = detector_maps_of(
                    self.loaded,
                    _samples(image_files),
                    "predict",
                    "",
                    self.size,
                    self.letterbox,
                    self.accelerator,
                    self.devices,
                    Path(engine_root),
                )
        map_set.defect_types = None  # the placeholder type is not ground truth
        map_set.is_normal = None
        return map_set


def _samples(image_files: list[Path]) -> pd.DataFrame:
    """A sample table of new images: no type, no mask."""
    from anomalib_ncd.data.samples import make_sample_table

    return make_sample_table(
        {"image_path": str(path), "defect_type": "unknown", "is_normal": False, "split": "test"} for path in image_files
    )
