"""``anomalib-ncd predict``: classify new images with a discovery run's model and its detector."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from anomalib_ncd.commands.config import CONFIG_FILE, config_yaml
from anomalib_ncd.commands.new_images import DetectorMaps, RunDetector, list_images
from anomalib_ncd.data.image_io import check_image_sizes
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.pipeline.runs import completed_run, load_run_model
from anomalib_ncd.results import next_version_dir

if TYPE_CHECKING:
    import pandas as pd

    from anomalib_ncd.discovery.classification import ImageClassification
    from anomalib_ncd.maps.map_set import AnomalyMapSet

logger = logging.getLogger("anomalib_ncd")


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
