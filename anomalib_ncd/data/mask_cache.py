"""Mask files that anomalib reads the way this package means them.

anomalib 2.7 reads a ground-truth mask with ``PIL.Image.open(path).convert("L")`` and counts every
pixel ``> 0`` as defect (``anomalib.data.utils.image.read_mask``), and it needs the mask at the
image's size. This package's convention is foreground ``> 127``. So a mask file is handed to
anomalib unchanged only when both readings agree (no grey value in ``1..127``) and its size is the
image's; otherwise a 0/255 copy at the image's size is written to a cache folder. Rows with boxes
instead of a mask (NEU-DET) get their boxes rasterised into the cache the same way.

Cache files are named by a hash of their source (mask path, size and modification time, or image
path and boxes) and the image size, so they are reused across runs and refreshed when the source
changes.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import MASK_THRESHOLD, read_image, read_image_size, write_mask_file
from anomalib_ncd.data.masks import boxes_to_mask, has_value


def default_mask_cache_dir() -> Path:
    """Return the default cache folder: ``<system temp>/anomalib-ncd/masks``.

    Not ``anomalib_ncd``: Python would import a folder of the package's name in the working directory
    as the package (``python -m anomalib_ncd.cli`` run from the temp folder failed that way).

    Returns:
        The folder path (not created).
    """
    return Path(tempfile.gettempdir()) / "anomalib-ncd" / "masks"


def anomalib_mask_path(row: Mapping[str, Any] | pd.Series, cache_dir: str | Path | None = None) -> str:
    """Return a mask file for ``row`` that anomalib reads correctly, or ``""`` if the row has no region.

    Args:
        row: a sample-table row (``image_path``, ``mask_path``, ``boxes``).
        cache_dir: where converted masks are written; :func:`default_mask_cache_dir` when ``None``.

    Returns:
        The original mask path when anomalib already reads it right, a cached 0/255 mask at the
        image's size otherwise, or ``""`` when the row has neither mask nor boxes.

    Raises:
        FileNotFoundError: if the image or mask is missing.
        ValueError: if one of them cannot be decoded.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_mask_cache_dir()
    mask_path = row.get("mask_path")
    boxes = row.get("boxes")
    if not has_value(mask_path) and not has_value(boxes):
        return ""
    shape = read_image_size(row["image_path"])
    if has_value(mask_path):
        grey = read_image(mask_path, colour=False)
        if grey.shape == shape and not ((grey > 0) & (grey <= MASK_THRESHOLD)).any():
            return str(mask_path)
        stat = Path(mask_path).stat()
        source = f"mask|{Path(mask_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{shape}"
        destination = _cache_file(cache_dir, source)
        if not destination.is_file():
            height, width = shape
            resized = cv2.resize(grey, (width, height), interpolation=cv2.INTER_NEAREST)
            write_mask_file(destination, resized > MASK_THRESHOLD)
        return str(destination)
    assert has_value(boxes)  # a row with neither a mask nor boxes returned above
    box_list = [tuple(int(value) for value in box) for box in boxes]
    destination = _cache_file(cache_dir, f"boxes|{Path(row['image_path']).resolve()}|{box_list}|{shape}")
    if not destination.is_file():
        write_mask_file(destination, boxes_to_mask(box_list, shape).astype(np.uint8))
    return str(destination)


def _cache_file(cache_dir: Path, source: str) -> Path:
    return cache_dir / f"{hashlib.sha256(source.encode()).hexdigest()[:24]}.png"
