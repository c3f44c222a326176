"""Loader for a generic "one folder per type" layout.

Layout::

    <root>/<type>/*.{png,jpg,jpeg,bmp,tif,tiff}              images (any case of the suffix)
    <mask_root>/<type>/<stem><mask_suffix>.<image suffix>    optional masks, foreground > 127

Folders whose name is in ``normal_types`` (compared case-insensitively) hold defect-free images.
Every image is in split "test" unless ``normal_train_fraction`` sends a share of the normal images
to split "train", chosen per type folder with the rule of :mod:`anomalib_ncd.data.splits`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from anomalib_ncd.data.image_io import IMAGE_EXTENSIONS, list_images, list_subfolders
from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.data.splits import select_train_names

DEFAULT_NORMAL_TYPES: frozenset[str] = frozenset({"good", "normal", "ok", "free"})


def load_typed_folder(
    root: str | Path,
    *,
    normal_types: Iterable[str] = DEFAULT_NORMAL_TYPES,
    mask_root: str | Path | None = None,
    mask_suffix: str = "_mask",
    require_masks: bool = False,
    normal_train_fraction: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Build the sample table of a folder with one sub-folder of images per type.

    Args:
        root: the folder holding one sub-folder per type (normal types included).
        normal_types: type folder names that hold normal images, case-insensitive.
        mask_root: folder with one sub-folder of masks per defect type, or ``None`` for no masks.
        mask_suffix: the mask of ``<stem>.<ext>`` is ``<stem><mask_suffix>.<ext2>`` (any image
            suffix); ``<stem>.<ext2>`` is accepted too.
        require_masks: raise if a defect image has no mask (needs ``mask_root``).
        normal_train_fraction: fraction of each normal folder put in split "train".
        seed: seed of that split.

    Returns:
        The sample table, rows by type folder name and file name.

    Raises:
        FileNotFoundError: if ``root`` or ``mask_root`` is missing, or a required mask is missing.
        ValueError: if ``root`` has no type folder, a type folder has no image, or masks are
            required without a ``mask_root``.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        msg = f"dataset root not found: {root}"
        raise FileNotFoundError(msg)
    if mask_root is not None:
        mask_root = Path(mask_root).resolve()
        if not mask_root.is_dir():
            msg = f"mask root not found: {mask_root}"
            raise FileNotFoundError(msg)
    elif require_masks:
        msg = "require_masks=True needs a mask_root"
        raise ValueError(msg)
    normal_names = {name.casefold() for name in normal_types}
    type_folders = [folder for folder in list_subfolders(root) if folder != mask_root]
    if not type_folders:
        msg = f"no type folders in {root}"
        raise ValueError(msg)

    records: list[dict[str, object]] = []
    for type_folder in type_folders:
        defect_type = type_folder.name
        is_normal = defect_type.casefold() in normal_names
        images = list_images(type_folder, require_any=True)
        train_names = select_train_names((p.name for p in images), normal_train_fraction, seed) if is_normal else set()
        masks_by_stem = _masks_by_stem(mask_root / defect_type) if mask_root is not None and not is_normal else {}
        for image_path in images:
            mask_path = None
            if not is_normal:
                mask_path = masks_by_stem.get(f"{image_path.stem}{mask_suffix}") or masks_by_stem.get(image_path.stem)
                if mask_path is None and require_masks:
                    assert mask_root is not None  # require_masks without a mask_root was refused above
                    msg = f"mask not found for {image_path} in {mask_root / defect_type}"
                    raise FileNotFoundError(msg)
            records.append(
                {
                    "image_path": image_path,
                    "defect_type": defect_type,
                    "is_normal": is_normal,
                    "mask_path": mask_path,
                    "split": "train" if image_path.name in train_names else "test",
                }
            )
    return make_sample_table(records)


def _masks_by_stem(mask_folder: Path) -> dict[str, Path]:
    if not mask_folder.is_dir():
        return {}
    return {path.stem: path for path in list_images(mask_folder, IMAGE_EXTENSIONS)}
