"""The ground-truth region of one sample-table row, as a boolean mask at the image's size.

Masks are optional: discovery needs none. Only what measures against the true defect regions
(the ground-truth-region mode, :func:`anomalib_ncd.regions.extract.ground_truth_regions`, and the
known classes' labeled set) needs them, and checks with :func:`require_annotations`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard, TypeVar

import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import read_image_size, read_mask_file

_T = TypeVar("_T")

Box = tuple[int, int, int, int]


def boxes_to_mask(boxes: Iterable[Sequence[int]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise boxes ``(x0, y0, x1, y1)`` (inclusive start, exclusive end) into a mask.

    Boxes are clipped to the image; a box that is empty after clipping adds nothing.

    Args:
        boxes: boxes in pixel coordinates.
        shape: ``(height, width)`` of the mask.

    Returns:
        A ``bool`` array of ``shape``, True inside any box.
    """
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        left, right = max(int(x0), 0), min(int(x1), width)
        top, bottom = max(int(y0), 0), min(int(y1), height)
        if right > left and bottom > top:
            mask[top:bottom, left:right] = True
    return mask


def has_value(value: _T | None) -> TypeGuard[_T]:
    """Tell whether a table cell holds something (not ``None``/NaN, not an empty string or list).

    Args:
        value: a cell of a sample table.

    Returns:
        True when the cell is set (then it is not ``None``).
    """
    if value is None:
        return False
    if isinstance(value, str | list | tuple):
        return len(value) > 0
    return not bool(pd.isna(value))


def read_row_mask(row: Mapping[str, Any] | pd.Series, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return the ground-truth region of a sample-table row as a boolean mask.

    The mask comes from ``mask_path`` (foreground > 127, resized with nearest-neighbour if its size
    differs from the image) or, when there is no mask file, from the ``boxes``. A row with neither
    (normal images, unannotated defects) gives an all-False mask.

    Args:
        row: a row of a sample table (needs ``image_path``, ``mask_path``, ``boxes``).
        shape: ``(height, width)`` of the image; read from the image header when omitted.

    Returns:
        A ``bool`` array of the image's size.

    Raises:
        FileNotFoundError: if the image (when ``shape`` is omitted) or the mask file is missing.
        ValueError: if one of them cannot be decoded.
    """
    if shape is None:
        shape = read_image_size(row["image_path"])
    mask_path = row.get("mask_path")
    if has_value(mask_path):
        return read_mask_file(mask_path, shape)
    boxes = row.get("boxes")
    if has_value(boxes):
        return boxes_to_mask(boxes, shape)
    return np.zeros(shape, dtype=bool)


def is_annotated(row: Mapping[str, Any] | pd.Series) -> bool:
    """Tell whether a sample-table row has a ground-truth region: a mask file or boxes.

    Args:
        row: a row of a sample table.

    Returns:
        True when ``mask_path`` or ``boxes`` is set.
    """
    return has_value(row.get("mask_path")) or has_value(row.get("boxes"))


def require_annotations(samples: pd.DataFrame, purpose: str) -> None:
    """Check that every defect image of a sample table has a mask or boxes.

    Args:
        samples: a sample table.
        purpose: what needs the masks, for the message (e.g. ``"ground-truth regions"``).

    Raises:
        ValueError: naming the first defect image without a mask or boxes, and how many there are.
    """
    missing = [
        str(row["image_path"]) for _, row in samples.iterrows() if not bool(row["is_normal"]) and not is_annotated(row)
    ]
    if missing:
        msg = (
            f"{purpose} need a mask or boxes for every defect image; {len(missing)} have none "
            f"(e.g. {missing[0]}): add the masks (MVTec AD: ground_truth/<type>/<stem>_mask.png)"
        )
        raise ValueError(msg)
