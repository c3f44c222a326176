"""``anomalib-ncd predict``: classify new images with a discovery run's model and its detector."""

from __future__ import annotations

import json
import logging
import sys
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
    import pandas as pd

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
    chunk_size: int = 256,
    accelerator: str = "auto",
    devices: int = 1,
) -> Path:
    """Classify new images: per image its class (known, discovered, normal or unknown), per region its class.

    ``unknown`` images and regions fit none of the model's classes (:mod:`~anomalib_ncd.discovery.novelty`):
    their ``class_name`` is ``unknown``, ``pred_class`` keeps the nearest class, and ``unknown_score``
    and ``region_unknown_scores`` say how atypical they are.

    The images stream through in chunks of ``chunk_size``: the detector's maps and the regions of
    one chunk at a time are in memory, whatever the folder's size. Each chunk's rows are written
    atomically to ``parts/`` as it finishes, so a killed predict resumes where it stopped: run the same
    command with ``--output`` set to its folder (the same run, images and chunk size).

    Args:
        run: a completed ``discover`` run folder (or its ``latest`` link).
        images: an image file or a folder of images (searched recursively).
        maps: saved raw maps of these images (``index.csv`` folder); needed when the run was
            discovered from saved maps and so has no detector.
        detector: the run's detector: its model class (when the run does not record it) and
            whether to trust a checkpoint that needs more than plain data.
        output: output folder (default: ``<run>/predictions/vN``); the folder of a killed predict
            resumes it.
        overlays: also write, per image, its anomaly-map overlay with region boxes and classes.
        batch_size: regions per forward pass.
        chunk_size: images mapped and classified together (memory grows with it, not with the folder).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``...).
        devices: number of devices.

    Returns:
        The output folder, with ``predictions.csv`` and ``predictions.json``.

    Raises:
        ValueError: when the run is not a completed discovery run, or its checkpoint or the detector's
            is unusable (corrupt, not a checkpoint, or needing types outside the allow-list), or
            ``output`` holds a predict of other images.
    """
    from tqdm import tqdm

    from anomalib_ncd.pipeline.estimator import DefectDiscovery
    from anomalib_ncd.pipeline.tables import LIST_COLUMNS, assignments_table

    arguments = dict(locals())
    if chunk_size < 1:
        msg = f"chunk_size must be at least 1, got {chunk_size}"
        raise ValueError(msg)
    run_dir, state = completed_run(run)
    image_files = list_images(images)
    check_image_sizes(image_files)
    model = load_run_model(run_dir)  # before the detector runs: a bad run checkpoint fails fast
    # a missing detector or bad saved maps fail before anything is written
    mapper = DetectorMaps(maps, state, detector, accelerator, devices, image_files)
    folder = Path(output) if output is not None else next_version_dir(run_dir / "predictions")
    parts = PredictionParts(folder, run_dir, image_files, chunk_size)
    done = parts.completed()
    if done:
        print(f"resuming {folder}: {parts.n_images_in(done)} of {len(image_files)} images already classified")
    discovery = DefectDiscovery(model, accelerator=accelerator, devices=devices, progress=False)
    with tqdm(total=len(image_files), unit="image", desc="Predicting", initial=parts.n_images_in(done)) as bar:
        for chunk in range(parts.n_chunks):
            if chunk in done:
                continue
            files = parts.files_of(chunk)
            try:
                map_set = mapper(files)
                found = discovery.classify(map_set, batch_size=batch_size)
            except KeyboardInterrupt:
                finished = parts.n_images_in(parts.completed())
                print(
                    f"predict interrupted with {finished} of {len(image_files)} images classified; the same "
                    f"command with --output {folder} resumes it",
                    file=sys.stderr,
                )
                raise
            if overlays:
                map_range = model.fitted_mebin().fitted_range()
                offset = chunk * chunk_size
                _write_overlays(folder / "overlays", map_set, found, model.class_names, map_range, offset)
            parts.write(chunk, assignments_table(map_set, found, model.class_names))
            bar.update(len(files))
    table = parts.table()
    atomic_write_text(folder / "predictions.csv", table.to_csv(index=False))
    records = json.loads(table.to_json(orient="records"))
    for record in records:
        for key in LIST_COLUMNS:
            record[key] = json.loads(record[key])
    atomic_write_text(folder / "predictions.json", json.dumps(records, indent=2))
    atomic_write_text(folder / CONFIG_FILE, config_yaml(arguments))
    counts = table["class_name"].value_counts().to_dict()
    print(f"{len(table)} images classified ({', '.join(f'{k}: {v}' for k, v in counts.items())}); results in {folder}")
    return folder


class PredictionParts:
    """The chunks of a predict and their finished rows, one CSV per chunk under ``<folder>/parts``.

    ``parts/manifest.json`` names the run, the images and the chunk size; a folder whose manifest
    differs belongs to another predict and is refused rather than mixed with this one.

    Args:
        folder: the predict's output folder.
        run_dir: the run whose model classifies.
        image_files: every image, in order.
        chunk_size: images per chunk.

    Raises:
        ValueError: when ``folder`` holds the parts of another predict.
    """

    def __init__(self, folder: Path, run_dir: Path, image_files: list[Path], chunk_size: int) -> None:
        import hashlib

        self.folder = folder / "parts"
        self.image_files = image_files
        self.chunk_size = chunk_size
        self.n_chunks = (len(image_files) + chunk_size - 1) // chunk_size
        listing = "\n".join(str(path) for path in image_files).encode("utf-8")
        self.manifest = {
            "run": str(run_dir),
            "images": len(image_files),
            "images_sha256": hashlib.sha256(listing).hexdigest(),
            "chunk_size": chunk_size,
        }
        manifest_file = self.folder / "manifest.json"
        if manifest_file.is_file():
            earlier = json.loads(manifest_file.read_text(encoding="utf-8"))
            if earlier != self.manifest:
                msg = (
                    f"{folder} holds a predict of other images, another run or another chunk size; "
                    "give a new --output (or the same images, run and --chunk_size to resume it)"
                )
                raise ValueError(msg)
        else:
            atomic_write_text(manifest_file, json.dumps(self.manifest, indent=2))

    def _part(self, chunk: int) -> Path:
        return self.folder / f"part-{chunk:06d}.csv"

    def files_of(self, chunk: int) -> list[Path]:
        """The images of one chunk."""
        return self.image_files[chunk * self.chunk_size : (chunk + 1) * self.chunk_size]

    def completed(self) -> set[int]:
        """The chunks whose rows are written (a part file exists only once complete: atomic writes)."""
        return {chunk for chunk in range(self.n_chunks) if self._part(chunk).is_file()}

    def n_images_in(self, chunks: set[int]) -> int:
        """Images in the given chunks."""
        return sum(len(self.files_of(chunk)) for chunk in chunks)

    def write(self, chunk: int, table: pd.DataFrame) -> None:
        """Write one chunk's rows, atomically."""
        atomic_write_text(self._part(chunk), table.to_csv(index=False))

    def table(self) -> pd.DataFrame:
        """Every chunk's rows, in image order."""
        import pandas as pd

        frames = [
            pd.read_csv(self._part(chunk), keep_default_na=False, na_values=[""]) for chunk in range(self.n_chunks)
        ]
        return pd.concat(frames, ignore_index=True)


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


def _write_overlays(
    folder: Path,
    map_set: AnomalyMapSet,
    found: ImageClassification,
    class_names: list[str],
    map_range: tuple[float, float],
    offset: int = 0,
) -> None:
    """One PNG per image: its anomaly map over it, region boxes in their class colour, its class.

    ``offset`` is the position of the first image in the whole predict (files are numbered by it).
    """
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
        write_png(folder / f"{offset + index:06d}_{Path(path).stem}.png", canvas)
