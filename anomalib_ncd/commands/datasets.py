"""Datasets for the commands: a folder in a known layout, the built-in synthetic set, or an anomalib datamodule."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from anomalib_ncd.data import (
    generate_synthetic_dataset,
    load_mtd,
    load_mvtec_ad,
    load_neu_det,
    load_typed_folder,
)
from anomalib_ncd.data.samples import make_sample_table

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule

SYNTHETIC = "synthetic"


def load_dataset(
    data: str,
    category: str | None,
    workdir: Path,
    seed: int,
    normal_train_share: float | None = None,
) -> tuple[pd.DataFrame, str, str]:
    """Load a dataset by path (layout detected) or generate the built-in synthetic one.

    Args:
        data: ``"synthetic"``, or a dataset folder in MTD, NEU-DET, MVTec AD or typed-folder layout.
        category: MVTec AD category (or synthetic category).
        workdir: where the synthetic dataset is written.
        seed: seed of the synthetic dataset, and of the ``normal_train_share`` choice.
        normal_train_share: typed folders (``root/<type>/*``) only: the share of each normal folder
            (``good``, ``ok``, ``normal``, ``free``) that trains the detector, chosen by file name
            and ``seed`` with the rule of :mod:`anomalib_ncd.data.splits` (the same files on every
            machine); the other normal images stay in the discovered set. ``None``: every image is
            discovered, and a detector cannot be trained here.

    Returns:
        The sample table, the dataset name and the category.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when ``normal_train_share`` is outside ``(0, 1)`` or given for a layout that has
            its own training split.
    """
    if normal_train_share is not None and not 0.0 < normal_train_share < 1.0:
        msg = f"normal_train_share must be between 0 and 1 (exclusive), got {normal_train_share}"
        raise ValueError(msg)
    if normal_train_share is not None and (data == SYNTHETIC or _has_own_train_split(Path(data), category)):
        msg = (
            "normal_train_share applies to typed folders (root/<type>/*) only; "
            f"{data} has its own training split: leave it out"
        )
        raise ValueError(msg)
    if data == SYNTHETIC:
        category = category or "brick"
        table = generate_synthetic_dataset(workdir / SYNTHETIC, category, seed=seed, image_size=(128, 176))
        return table, SYNTHETIC, category
    root = Path(data)
    if not root.is_dir():
        msg = f"dataset folder not found: {root}"
        raise FileNotFoundError(msg)
    # discovery needs no masks: a layout without them is read, its defects' mask_path left empty
    if any(root.glob("MT_*")):
        return load_mtd(root, require_masks=False), "MTD", ""
    if (root / "IMAGES").is_dir() and (root / "ANNOTATIONS").is_dir():
        return load_neu_det(root), "NEU-DET", ""
    if category is not None and (root / category / "test").is_dir():
        return load_mvtec_ad(root, category, require_masks=False), root.name or "MVTecAD", category
    if (root / "test").is_dir() and (root / "train").is_dir():
        return load_mvtec_ad(root.parent, root.name, require_masks=False), root.parent.name, root.name
    table = load_typed_folder(root, normal_train_fraction=normal_train_share or 0.0, seed=seed)
    return table, root.name, ""


def _has_own_train_split(root: Path, category: str | None) -> bool:
    """Whether a dataset folder is in a layout with its own detector-training split (MTD, MVTec AD, NEU-DET)."""
    return (
        any(root.glob("MT_*"))
        or ((root / "IMAGES").is_dir() and (root / "ANNOTATIONS").is_dir())
        or (category is not None and (root / category / "test").is_dir())
        or ((root / "test").is_dir() and (root / "train").is_dir())
    )


def table_from_datamodule(datamodule: AnomalibDataModule) -> tuple[pd.DataFrame, str, str]:
    """The sample table of an anomalib datamodule (MVTecAD, Folder, ...).

    anomalib knows only normal vs anomalous; the defect type of an image is its parent folder's
    name, as in every anomalib folder layout. The normal training images train the detector;
    every other image, of the test and of the validation set (anomalib's ``Folder`` moves half
    of the test images into validation by default), is discovered.

    Args:
        datamodule: the datamodule (set up here if it was not).

    Returns:
        The sample table, the dataset name and the category.

    Raises:
        ValueError: when the datamodule has no test images.
    """
    category = str(getattr(datamodule, "category", "") or "")
    name = str(getattr(datamodule, "name", type(datamodule).__name__))
    if callable(getattr(datamodule, "sample_table", None)):  # ours know each image's type already
        return datamodule.sample_table(), name, category
    if not hasattr(datamodule, "test_data"):
        datamodule.setup()
    records = []
    seen: set[str] = set()
    datasets = (
        ("train", getattr(datamodule, "train_data", None)),
        ("test", datamodule.test_data),
        ("test", getattr(datamodule, "val_data", None)),
    )
    for split, dataset in datasets:
        if dataset is None:
            continue
        for row in dataset.samples.itertuples():
            is_normal = int(row.label_index) == 0
            path = str(Path(row.image_path).resolve())
            if (split == "train" and not is_normal) or path in seen:
                continue
            seen.add(path)
            mask = getattr(row, "mask_path", None)
            records.append(
                {
                    "image_path": path,
                    "defect_type": Path(row.image_path).parent.name,
                    "is_normal": is_normal,
                    "mask_path": str(mask) if isinstance(mask, str) and mask else None,
                    "split": split,
                }
            )
    if not any(record["split"] == "test" for record in records):
        msg = f"datamodule {type(datamodule).__name__} has no test images to discover classes in"
        raise ValueError(msg)
    return make_sample_table(records), name, category
