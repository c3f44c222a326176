"""Loader for the Magnetic Tile Defects (MTD) dataset.

Layout::

    <root>/MT_<Type>/Imgs/<name>.jpg    image (grey)
    <root>/MT_<Type>/Imgs/<name>.png    same-named pixel mask, foreground > 127 (not strictly binary)

``defect_type`` is the folder name without the ``MT_`` prefix, keeping its spelling: "Blowhole",
"Break", "Crack", "Fray", "Uneven" and "Free" (the defect-free images, ``is_normal=True``). Normal
rows get ``mask_path=None`` like normal rows of every other loader (MTD's Free masks are empty).

Split (the AnomalyNCD protocol): ``train_fraction`` (default 0.8) of the Free images train the
detector (split "train"); the other Free images and every defect image form the discovery set
(split "test"). Which Free images go to "train" is decided by
:func:`anomalib_ncd.data.splits.select_train_names` on their file names: sort by
``SHA-256(f"{seed}:{file name}")``, take the first ``floor(0.8 * 952 + 0.5) = 762``. With the
defaults that leaves 190 Free + 392 defect images = 582 test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import list_images, list_subfolders
from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.data.splits import select_train_names

MTD_FOLDER_PREFIX = "MT_"
MTD_NORMAL_TYPE = "Free"
MTD_IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg"})


def load_mtd(
    root: str | Path,
    *,
    train_fraction: float = 0.8,
    seed: int = 0,
    require_masks: bool = True,
) -> pd.DataFrame:
    """Build the sample table of MTD with the deterministic detector-train / discovery split.

    Args:
        root: the folder holding the ``MT_*`` folders.
        train_fraction: fraction of the Free images put in split "train".
        seed: seed of the split (see :mod:`anomalib_ncd.data.splits`).
        require_masks: raise if a defect image lacks its ``.png`` mask; otherwise its
            ``mask_path`` is ``None``.

    Returns:
        The sample table, by type folder name and then file name.

    Raises:
        FileNotFoundError: if ``root`` or an ``MT_*/Imgs`` folder is missing, or a mask is
            missing while ``require_masks``.
        ValueError: if there is no ``MT_*`` folder, no Free folder, or an ``Imgs`` folder holds
            no ``.jpg`` image.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        msg = f"MTD root not found: {root}"
        raise FileNotFoundError(msg)
    type_folders = [folder for folder in list_subfolders(root) if folder.name.startswith(MTD_FOLDER_PREFIX)]
    if not type_folders:
        msg = f"no {MTD_FOLDER_PREFIX}* folders in {root}: not an MTD dataset"
        raise ValueError(msg)
    images_by_type = {
        folder.name.removeprefix(MTD_FOLDER_PREFIX): list_images(
            folder / "Imgs", MTD_IMAGE_EXTENSIONS, require_any=True
        )
        for folder in type_folders
    }
    if MTD_NORMAL_TYPE not in images_by_type:
        msg = f"no {MTD_FOLDER_PREFIX}{MTD_NORMAL_TYPE} folder (defect-free images) in {root}"
        raise ValueError(msg)
    train_names = select_train_names((path.name for path in images_by_type[MTD_NORMAL_TYPE]), train_fraction, seed)

    records: list[dict[str, object]] = []
    for defect_type, images in images_by_type.items():
        is_normal = defect_type == MTD_NORMAL_TYPE
        for image_path in images:
            mask_path = None if is_normal else _mask_of(image_path, require_masks)
            split = "train" if is_normal and image_path.name in train_names else "test"
            records.append(
                {
                    "image_path": image_path,
                    "defect_type": defect_type,
                    "is_normal": is_normal,
                    "mask_path": mask_path,
                    "split": split,
                }
            )
    return make_sample_table(records)


def _mask_of(image_path: Path, required: bool) -> Path | None:
    mask_path = image_path.with_suffix(".png")
    if mask_path.is_file():
        return mask_path
    if required:
        msg = f"mask not found for {image_path}: expected {mask_path}"
        raise FileNotFoundError(msg)
    return None


def cap_detector_training(table: pd.DataFrame, max_train: int, seed: int = 0) -> pd.DataFrame:
    """Keep at most ``max_train`` of the detector's training images (a seeded choice), all test images.

    Fewer training images make a detector's CPU training shorter; benchmarks cap its training set
    this way so that the detector and the discovery benchmarks train the same detector.

    Args:
        table: a sample table with a ``split`` column.
        max_train: the cap.
        seed: seed of the choice.

    Returns:
        The table with the surplus training rows removed (index reset).
    """
    train_rows = table.index[table["split"] == "train"]
    if len(train_rows) <= max_train:
        return table.reset_index(drop=True)
    keep = set(np.random.default_rng(seed).choice(train_rows, max_train, replace=False).tolist())
    return table[(table["split"] == "test") | table.index.isin(keep)].reset_index(drop=True)
