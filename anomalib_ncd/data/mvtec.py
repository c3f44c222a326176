"""Loader for the MVTec AD folder layout (also written by :mod:`anomalib_ncd.data.synthetic`).

Layout of one category::

    <root>/<category>/train/good/*.png                     -> split "train", normal
    <root>/<category>/test/good/*.png                      -> split "test", normal
    <root>/<category>/test/<type>/*.png                    -> split "test", defect type <type>
    <root>/<category>/ground_truth/<type>/<stem>_mask.png   -> mask of test/<type>/<stem>.*

``defect_type`` is the folder name as spelled on disk ("good", "broken_large", ...).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from anomalib_ncd.data.image_io import list_images, list_subfolders
from anomalib_ncd.data.samples import make_sample_table

MVTEC_NORMAL_TYPE = "good"
MVTEC_COMBINED_TYPE = "combined"


def find_mask(mask_folder: Path, stem: str, suffixes: tuple[str, ...] = ("_mask", "")) -> Path | None:
    """Find the mask of the image ``stem`` in ``mask_folder``: ``<stem><suffix>.png`` for each suffix.

    Args:
        mask_folder: the folder holding the masks of one defect type.
        stem: the image's file name without extension.
        suffixes: name suffixes to try in order.

    Returns:
        The first existing mask file, or ``None``.
    """
    for suffix in suffixes:
        candidate = mask_folder / f"{stem}{suffix}.png"
        if candidate.is_file():
            return candidate
    return None


def load_mvtec_ad(
    root: str | Path,
    category: str,
    *,
    drop_combined: bool = True,
    require_masks: bool = True,
) -> pd.DataFrame:
    """Build the sample table of one MVTec AD category.

    Args:
        root: the dataset root holding one folder per category.
        category: the category folder name, e.g. ``"bottle"``.
        drop_combined: skip the ``test/combined`` folder (images with several defect types), as
            the class-discovery protocol does.
        require_masks: raise if a defect image has no mask; otherwise its ``mask_path`` is ``None``.

    Returns:
        The sample table, train rows first, then test rows by type folder name and file name.

    Raises:
        FileNotFoundError: if the category, its ``train/good`` or ``test`` folder, or (when
            ``require_masks``) a mask is missing.
        ValueError: if an image folder holds no image.
    """
    category_root = Path(root).resolve() / category
    if not category_root.is_dir():
        msg = f"MVTec AD category folder not found: {category_root}"
        raise FileNotFoundError(msg)
    records: list[dict[str, object]] = []
    train_folder = category_root / "train" / MVTEC_NORMAL_TYPE
    records.extend(
        {"image_path": path, "defect_type": MVTEC_NORMAL_TYPE, "is_normal": True, "split": "train"}
        for path in list_images(train_folder, require_any=True)
    )
    for type_folder in list_subfolders(category_root / "test"):
        defect_type = type_folder.name
        if drop_combined and defect_type == MVTEC_COMBINED_TYPE:
            continue
        is_normal = defect_type == MVTEC_NORMAL_TYPE
        for image_path in list_images(type_folder, require_any=True):
            mask_path = None
            if not is_normal:
                mask_path = find_mask(category_root / "ground_truth" / defect_type, image_path.stem)
                if mask_path is None and require_masks:
                    expected = category_root / "ground_truth" / defect_type / f"{image_path.stem}_mask.png"
                    msg = f"mask not found for {image_path}: expected {expected}"
                    raise FileNotFoundError(msg)
            records.append(
                {
                    "image_path": image_path,
                    "defect_type": defect_type,
                    "is_normal": is_normal,
                    "mask_path": mask_path if mask_path is not None else None,
                    "split": "test",
                }
            )
    return make_sample_table(records)
