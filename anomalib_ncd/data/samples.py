"""The sample table: one row per image of a dataset whose anomalies have defect *types*.

anomalib's own sample tables only know "normal" vs "anomalous". Class discovery needs the defect
type of every image (for evaluation) and where it is (mask or boxes), so every loader of this
package returns a :class:`pandas.DataFrame` with the columns below.

Columns:
    image_path (str): absolute path of the image.
    defect_type (str): the folder/type name as the dataset spells it ("good", "Free", "crack", ...).
    is_normal (bool): True for defect-free images.
    mask_path (str | None): pixel mask (foreground > 127), if the dataset has one.
    boxes (list[tuple[int, int, int, int]] | None): defect boxes ``(x0, y0, x1, y1)`` in pixels,
        inclusive-exclusive, when the dataset annotates boxes instead of masks.
    split (str): ``"train"`` (normal images that train the detector) or ``"test"`` (the set in which
        classes are discovered and evaluated).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

SAMPLE_COLUMNS: tuple[str, ...] = ("image_path", "defect_type", "is_normal", "mask_path", "boxes", "split")
SPLITS: frozenset[str] = frozenset({"train", "test"})


def make_sample_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a validated sample table from row dictionaries.

    Missing optional keys (``mask_path``, ``boxes``) are filled with ``None``.

    Args:
        records: one mapping per image with at least ``image_path``, ``defect_type``,
            ``is_normal`` and ``split``.

    Returns:
        The sample table, rows in the given order, index ``0..n-1``.

    Example:
        >>> table = make_sample_table([{"image_path": "/a.png", "defect_type": "good",
        ...                             "is_normal": True, "split": "train"}])
        >>> list(table.columns) == list(SAMPLE_COLUMNS)
        True
    """
    rows = []
    for record in records:
        row = {column: record.get(column) for column in SAMPLE_COLUMNS}
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    table["is_normal"] = table["is_normal"].astype(bool)
    table["image_path"] = table["image_path"].map(lambda p: str(p) if p is not None else p)
    # Built as an object Series: pandas >= 3 would infer a string dtype and turn None into NaN.
    mask_paths = [str(p) if p is not None and not pd.isna(p) else None for p in table["mask_path"]]
    table["mask_path"] = pd.Series(mask_paths, index=table.index, dtype=object)
    table = table.astype({"boxes": object})
    validate_sample_table(table)
    return table


def validate_sample_table(table: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming the problem if ``table`` is not a valid sample table.

    Args:
        table: the table to check.

    Raises:
        ValueError: on missing columns, empty or duplicate image paths, or unknown splits.
    """
    missing = [column for column in SAMPLE_COLUMNS if column not in table.columns]
    if missing:
        msg = f"sample table lacks columns {missing}; expected {list(SAMPLE_COLUMNS)}"
        raise ValueError(msg)
    if table["image_path"].isna().any():
        msg = "sample table has rows without an image_path"
        raise ValueError(msg)
    duplicated = table["image_path"][table["image_path"].duplicated()]
    if len(duplicated):
        msg = f"sample table lists {duplicated.iloc[0]} more than once"
        raise ValueError(msg)
    bad_splits = sorted(set(table["split"]) - SPLITS)
    if bad_splits:
        msg = f"sample table has unknown splits {bad_splits}; allowed: {sorted(SPLITS)}"
        raise ValueError(msg)


def check_images_exist(table: pd.DataFrame) -> None:
    """Raise ``FileNotFoundError`` naming the first image or mask of ``table`` that does not exist.

    Args:
        table: a sample table.

    Raises:
        FileNotFoundError: when an image or mask file is missing.
    """
    for column in ("image_path", "mask_path"):
        for path in table[column]:
            if path is not None and not Path(path).is_file():
                msg = f"{column.replace('_', ' ')} not found: {path}"
                raise FileNotFoundError(msg)
