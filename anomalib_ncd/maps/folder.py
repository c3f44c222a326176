"""Read anomaly maps saved on disk.

Two ways to pair map files with their images:

* an ``index.csv`` (written by :class:`~anomalib_ncd.maps.export.AnomalyMapExporter`) that lists
  ``map_file`` and ``image_path``;
* matching relative paths: a map ``<maps>/<rel>/<stem>.<ext>`` belongs to the image
  ``<images_root>/<rel>/<stem>.*`` (or to the sample-table image with that relative path). This is
  how the AnomalyNCD authors distribute their maps (one 8-bit PNG per test image, in the layout of
  the dataset). When the full relative path does not match, the last two parts (``<type>/<stem>``)
  must match one image exactly.

Formats: float ``.npy``; ``.tif``/``.tiff`` (any dtype); 8-bit or 16-bit ``.png`` (rescaled to
``[0, 1]``; MEBin only needs the order of values).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from anomalib_ncd.data.image_io import read_image
from anomalib_ncd.maps.export import INDEX_FILE
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError, check_map

logger = logging.getLogger("anomalib_ncd")

MAP_SUFFIXES = (".npy", ".tif", ".tiff", ".png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_map_file(path: str | Path) -> np.ndarray:
    """Read one saved anomaly map as float32.

    Args:
        path: a ``.npy``, ``.tif``/``.tiff`` or ``.png`` file.

    Returns:
        The map, ``(H, W)`` float32; PNG maps are scaled to ``[0, 1]``.

    Raises:
        FileNotFoundError: when the file does not exist.
        MapError: when the file cannot be read or holds no valid map.
    """
    file = Path(path)
    if not file.is_file():
        msg = f"anomaly map not found: {file}"
        raise FileNotFoundError(msg)
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        elif suffix in {".tif", ".tiff"}:
            array = tifffile.imread(file)
        elif suffix == ".png":
            array = read_image(file, colour=False).astype(np.float32) / 255.0
        else:
            msg = f"unsupported anomaly-map format {suffix!r}: {file} (use {', '.join(MAP_SUFFIXES)})"
            raise MapError(msg)
    except (OSError, ValueError) as error:
        if isinstance(error, MapError):
            raise
        msg = f"cannot read anomaly map {file}: {error}"
        raise MapError(msg) from error
    return check_map(array, str(file))


def _relative_key(path: Path, root: Path) -> tuple[str, ...]:
    relative = path.relative_to(root)
    return (*relative.parent.parts, relative.stem)


def _match_images(
    map_files: list[Path],
    maps_root: Path,
    image_files: list[Path],
    images_root: Path,
) -> list[Path]:
    """The image of each map file, by full relative path, else by ``<type>/<stem>``."""
    by_full = {_relative_key(image, images_root): image for image in image_files}
    by_tail: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    for key, image in by_full.items():
        by_tail[key[-2:]].append(image)
    matched = []
    for map_file in map_files:
        key = _relative_key(map_file, maps_root)
        found = by_full.get(key)
        if found is None:
            candidates = by_tail.get(key[-2:], [])
            if len(candidates) != 1:
                why = "no image" if not candidates else f"{len(candidates)} images"
                msg = f"anomaly map {map_file} matches {why} under {images_root} (looked for {'/'.join(key)}.*)"
                raise MapError(msg)
            found = candidates[0]
        matched.append(found)
    return matched


def load_map_folder(
    folder: str | Path,
    images_root: str | Path | None = None,
    samples: pd.DataFrame | None = None,
) -> AnomalyMapSet:
    """Load a folder of saved anomaly maps as an :class:`AnomalyMapSet`.

    Args:
        folder: the maps folder; with an ``index.csv`` the pairing comes from it.
        images_root: where the images lie, for pairing by relative path (no index).
        samples: a sample table; gives defect types and masks, and (without ``images_root`` and
            index) the images to pair with, relative to their common parent folder.

    Returns:
        The map set, ordered by image path (index order when there is an index).

    Raises:
        FileNotFoundError: when the folder does not exist.
        MapError: when the folder has no maps, or a map cannot be paired or read.
    """
    root = Path(folder)
    if not root.is_dir():
        msg = f"anomaly-map folder not found: {root}"
        raise FileNotFoundError(msg)
    index_file = root / INDEX_FILE
    if index_file.is_file():
        index = pd.read_csv(index_file)
        if index.empty:
            msg = f"{index_file} lists no maps"
            raise MapError(msg)
        maps = [read_map_file(root / name) for name in index["map_file"]]
        shapes = []
        if {"image_height", "image_width"} <= set(index.columns) and index[["image_height", "image_width"]].notna().all(
            axis=None
        ):
            shapes = [(int(h), int(w)) for h, w in zip(index["image_height"], index["image_width"], strict=True)]
        map_set = AnomalyMapSet(maps=maps, image_paths=list(index["image_path"]), image_shapes=shapes)
        if "pred_score" in index.columns and index["pred_score"].notna().all():
            map_set.scores = [float(score) for score in index["pred_score"]]
        return map_set.with_samples(samples) if samples is not None else map_set

    map_files = sorted(path for path in root.rglob("*") if path.suffix.lower() in MAP_SUFFIXES and path.is_file())
    if not map_files:
        msg = f"no anomaly maps ({', '.join(MAP_SUFFIXES)}) in {root}"
        raise MapError(msg)
    if images_root is not None:
        images_dir = Path(images_root)
        if not images_dir.is_dir():
            msg = f"image folder not found: {images_dir}"
            raise FileNotFoundError(msg)
        image_files = [path for path in images_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES]
        image_files = [path for path in image_files if path.is_file()]
    elif samples is not None:
        image_files = [Path(path).resolve() for path in samples["image_path"]]
        images_dir = Path(_common_parent(image_files))
    else:
        msg = "pairing saved maps with images needs an index.csv in the folder, images_root, or a sample table"
        raise MapError(msg)
    images = _match_images(map_files, root, image_files, images_dir)
    maps = [read_map_file(path) for path in map_files]
    map_set = AnomalyMapSet(maps=maps, image_paths=[str(image) for image in images])
    return map_set.with_samples(samples) if samples is not None else map_set


def check_map_coverage(
    map_set: AnomalyMapSet,
    samples: pd.DataFrame,
    *,
    skip_missing: bool = False,
    skip_option: str = "--detector.skip_missing_maps true",
) -> int:
    """Check that every image of a sample table has a map in the set (saved maps lose none silently).

    Args:
        map_set: the maps (e.g. from :func:`load_map_folder`).
        samples: the images that must have one (e.g. the test rows of the run's table).
        skip_missing: warn with the count of images without a map instead of raising; those images
            are left out of the run.
        skip_option: the command-line option that sets ``skip_missing``, for the message.

    Returns:
        The number of images without a map (0 unless ``skip_missing``).

    Raises:
        MapError: naming the first image without a map and the count, unless ``skip_missing``.
    """
    mapped = {str(Path(path).resolve()) for path in map_set.image_paths}
    missing = [str(path) for path in samples["image_path"] if str(Path(path).resolve()) not in mapped]
    if missing and not skip_missing:
        msg = (
            f"{len(missing)} of {len(samples)} images have no anomaly map (e.g. {missing[0]}); "
            f"add their maps, or pass {skip_option} to leave them out"
        )
        raise MapError(msg)
    if missing:
        logger.warning(
            "%d of %d images have no anomaly map and are left out (e.g. %s)", len(missing), len(samples), missing[0]
        )
    return len(missing)


def _common_parent(paths: list[Path]) -> Path:
    parents = [path.resolve().parent for path in paths]
    common = parents[0]
    for parent in parents[1:]:
        while common not in (parent, *parent.parents):
            common = common.parent
    return common
