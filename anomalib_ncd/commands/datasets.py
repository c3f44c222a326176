"""Datasets for the commands: a folder in a known layout, the built-in synthetic set, or an anomalib datamodule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from anomalib_ncd.data import (
    generate_synthetic_dataset,
    load_mtd,
    load_mvtec_ad,
    load_neu_det,
    load_typed_folder,
)
from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.data.synthetic import DEFAULT_FAINT_SHARE, DEFAULT_MODE, HIGHRES_SMALL_MODE, HIGHRES_SMALL_SIZE
from anomalib_ncd.data.synthetic_defects import DEFAULT_DEFECT_AREA, DEFAULT_SMALL_DEFECT_TYPES

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule

SYNTHETIC = "synthetic"

# The built-in synthetic set of each mode (``--synthetic.mode``): generator arguments besides the
# category and the seed. Both have four defect types, so the demo discovers 5 classes in each.
SYNTHETIC_PRESETS: dict[str, dict[str, Any]] = {
    DEFAULT_MODE: {"image_size": (128, 176)},
    HIGHRES_SMALL_MODE: {
        "mode": HIGHRES_SMALL_MODE,
        "image_size": HIGHRES_SMALL_SIZE,
        "colour": True,
        "defect_types": DEFAULT_SMALL_DEFECT_TYPES,
        "defect_area": DEFAULT_DEFECT_AREA,
        "faint_share": DEFAULT_FAINT_SHARE,
    },
}


@dataclass(frozen=True)
class SyntheticSettings:
    """The built-in synthetic set (``--data synthetic``).

    Attributes:
        mode: ``default``: 128 x 176 grey images, defects sized by the image's side;
            ``highres_small``: 1024 x 768 colour images, defects of 0.05-0.5% of the image area, a
            quarter of them faint.
        bit_depth: 8, or 16 for 16-bit PNG images.
    """

    mode: Literal["default", "highres_small"] = DEFAULT_MODE
    bit_depth: Literal[8, 16] = 8

    @property
    def name(self) -> str:
        """The dataset's name and folder: ``synthetic``, ``synthetic_highres_small``, ``..._16bit``."""
        name = SYNTHETIC if self.mode == DEFAULT_MODE else f"{SYNTHETIC}_{self.mode}"
        return name if self.bit_depth == 8 else f"{name}_{self.bit_depth}bit"


def load_dataset(
    data: str,
    category: str | None,
    workdir: Path,
    seed: int,
    synthetic: SyntheticSettings | None = None,
    *,
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
        synthetic: the built-in set's mode and bit depth (``None``: the default mode, 8 bits).

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
        settings = synthetic or SyntheticSettings()
        category = category or "brick"
        # Each mode has its own folder and name, so switching modes never overwrites another's set.
        table = generate_synthetic_dataset(
            workdir / settings.name,
            category,
            seed=seed,
            bit_depth=settings.bit_depth,
            **SYNTHETIC_PRESETS[settings.mode],
        )
        return table, settings.name, category
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
    sample_table = getattr(datamodule, "sample_table", None)
    if callable(sample_table):  # ours know each image's type already
        return sample_table(), name, category
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
