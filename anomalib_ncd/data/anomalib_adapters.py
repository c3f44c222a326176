"""Hand a sample table to anomalib, so its detectors train and run on our datasets.

anomalib 2.7 ships a ``Tabular`` datamodule that takes a table of ``image_path``, ``label_index``,
``split`` and ``mask_path``: the least intrusive route (no symlink tree, no copies). This module
builds that table from a sample table (normal "train" rows train the detector; every "test" row,
normal or not, is evaluated) and picks the datamodule options that keep the split as we made it:

* validation = the test set (``ValSplitMode.SAME_AS_TEST``), so no test image is moved away;
* ``TestSplitMode.FROM_DIR`` when the test rows include normal images, ``NONE`` otherwise, so
  anomalib never moves training images into the test set.

Masks go through :func:`anomalib_ncd.data.mask_cache.anomalib_mask_path` (anomalib counts mask
values ``> 0`` as defect; ours is ``> 127``; boxes become masks). The defect types are not
anomalib's business (its labels are booleans): join on ``image_path`` with
:func:`defect_type_lookup`.

For anomalib's own CLI (``--data <class path>``), :mod:`anomalib_ncd.data.datamodules` wraps the
same choices in datamodule classes (``MTD``, ``SyntheticDefects``).

Images: anomalib's own reader (PIL's ``convert("RGB")``) clips a 16-bit image to white. The
datasets here (:class:`SampleDataset`) read through :func:`anomalib_ncd.data.image_io.read_image`
instead, which scales high bit depths by their dtype's range, so the detector sees the pixels the
region crops see.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from anomalib import TaskType
from anomalib.data import MVTecAD, Tabular
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.image.mvtecad import MVTecADDataset
from anomalib.data.datasets.image.tabular import TabularDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode, read_mask
from torchvision.transforms.v2 import Resize, Transform
from torchvision.tv_tensors import Image, Mask

from anomalib_ncd.data.image_io import read_image
from anomalib_ncd.data.letterbox import Letterbox
from anomalib_ncd.data.mask_cache import anomalib_mask_path
from anomalib_ncd.data.samples import validate_sample_table

ImageSize = int | tuple[int, int]

# The validation set is the test set, so no test image is moved away to validate.
VAL_SPLIT_MODE = ValSplitMode.SAME_AS_TEST


class OurImageReader:
    """Mixin for an anomalib image dataset: read its images with :func:`anomalib_ncd.data.image_io.read_image`.

    Put it before an ``AnomalibDataset`` subclass. Items are those of anomalib's image datasets
    (``ImageItem``: the image as float ``(3, H, W)`` in ``[0, 1]``, the mask, the label and the
    paths); only the image reader differs, so 16-bit files are scaled by their dtype's range
    instead of clipped to white, and a file that cannot be decoded is named.
    """

    samples: pd.DataFrame
    task: TaskType
    augmentations: Transform | None

    def __getitem__(self, index: int) -> ImageItem:
        """Return the item at ``index``.

        Args:
            index: position in the samples table.

        Returns:
            The image, its ground truth (mask for segmentation tasks) and paths, augmented.
        """
        row = self.samples.iloc[index]
        pixels = torch.from_numpy(read_image(row.image_path)).permute(2, 0, 1).contiguous()
        image = Image(pixels.to(torch.float32) / 255.0)
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            if row.label_index == LabelName.NORMAL:
                gt_mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
            elif row.label_index == LabelName.ABNORMAL:
                gt_mask = read_mask(row.mask_path, as_tensor=True)
        if self.augmentations:
            if self.task == TaskType.SEGMENTATION:
                placeholder = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
                image, augmented = self.augmentations(image, gt_mask if gt_mask is not None else placeholder)
                gt_mask = augmented if gt_mask is not None else None
            else:
                image = self.augmentations(image)
        gt_label = None if row.label_index == LabelName.UNKNOWN else torch.tensor(row.label_index)
        return ImageItem(
            image=image, gt_mask=gt_mask, gt_label=gt_label, image_path=row.image_path, mask_path=row.mask_path
        )


class SampleDataset(OurImageReader, TabularDataset):
    """anomalib's ``TabularDataset`` reading its images with our reader (see :class:`OurImageReader`)."""


class SampleMVTecADDataset(OurImageReader, MVTecADDataset):
    """anomalib's ``MVTecADDataset`` reading its images with our reader (see :class:`OurImageReader`)."""

    @property
    def name(self) -> str:
        """The dataset name anomalib reports, ``MVTecAD``."""
        return "MVTecAD"


class SampleMVTecAD(MVTecAD):
    """anomalib's ``MVTecAD`` datamodule whose datasets read images with our reader.

    Its name stays ``MVTecAD``, so anomalib's results path is that of ``MVTecAD``.
    """

    # Lightning declares a datamodule's name a plain attribute; anomalib (whose name this keeps)
    # overrides it with a read-only property, as here
    @property
    def name(self) -> str:  # type: ignore[override]
        """The datamodule name of anomalib's results path, ``MVTecAD``."""
        return "MVTecAD"

    def _setup(self, _stage: str | None = None) -> None:
        self.train_data = SampleMVTecADDataset(split=Split.TRAIN, root=self.root, category=self.category)
        self.test_data = SampleMVTecADDataset(split=Split.TEST, root=self.root, category=self.category)


class SampleTabular(Tabular):
    """anomalib's ``Tabular`` datamodule whose datasets are :class:`SampleDataset` (our image reader)."""

    def _setup(self, _stage: str | None = None) -> None:
        samples, root = self._unprocessed_samples, self.root
        self.train_data = SampleDataset(name=self.name, samples=samples, split=Split.TRAIN, root=root)
        self.test_data = SampleDataset(name=self.name, samples=samples, split=Split.TEST, root=root)


def to_anomalib_samples(table: pd.DataFrame, *, mask_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Convert a sample table into the table anomalib's ``Tabular`` datamodule reads.

    Args:
        table: a sample table.
        mask_cache_dir: where converted masks are written (see :mod:`anomalib_ncd.data.mask_cache`).

    Returns:
        Columns ``image_path``, ``label_index`` (0 normal, 1 defect), ``split`` and ``mask_path``
        (``""`` for normal rows, or for all rows when no defect has a region).

    Raises:
        ValueError: if the table is invalid, has a defect row in split "train", or only some of
            its test defects have a mask or boxes (anomalib needs all or none).
    """
    validate_sample_table(table)
    defects_in_train = table[(~table["is_normal"]) & (table["split"] == "train")]
    if len(defects_in_train):
        msg = f"defect images cannot train the detector: {defects_in_train['image_path'].iloc[0]} is in split 'train'"
        raise ValueError(msg)
    mask_paths = ["" if row["is_normal"] else anomalib_mask_path(row, mask_cache_dir) for _, row in table.iterrows()]
    samples = pd.DataFrame(
        {
            "image_path": table["image_path"].astype(str).to_numpy(),
            "label_index": (~table["is_normal"].astype(bool)).astype(int).to_numpy(),
            "split": table["split"].to_numpy(),
            "mask_path": mask_paths,
        }
    )
    defects = samples[samples["label_index"] == 1]
    unmasked = defects[defects["mask_path"] == ""]
    if 0 < len(unmasked) < len(defects):
        msg = (
            f"{len(unmasked)} of {len(defects)} defect images have no mask or boxes "
            f"(e.g. {unmasked['image_path'].iloc[0]}); anomalib needs masks for all defects or none"
        )
        raise ValueError(msg)
    return samples


def to_anomalib_datamodule(
    table: pd.DataFrame,
    name: str = "anomalib_ncd",
    *,
    category: str = "",
    image_size: ImageSize | None = None,
    train_batch_size: int = 32,
    eval_batch_size: int = 32,
    num_workers: int = 0,
    mask_cache_dir: str | Path | None = None,
    seed: int | None = None,
    letterbox: bool = False,
) -> SampleTabular:
    """Build anomalib's ``Tabular`` datamodule for a sample table (images read by our reader).

    Args:
        table: a sample table; normal "train" rows train, all "test" rows test and validate.
        name: dataset name (anomalib's results go to ``results/<model>/<name>/<category>``).
        category: category name for the results path.
        image_size: resize every image (and mask) to this ``(height, width)`` (or square side) in
            the datamodule. ``None`` keeps anomalib's default: the model's pre-processor resizes
            when an ``Engine`` runs; without a model, images of different sizes will not batch.
        train_batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: data-loader worker processes.
        mask_cache_dir: where converted masks are written.
        seed: seed for anomalib's own random splits (unused with the modes chosen here).
        letterbox: keep each image's aspect ratio inside a square ``image_size`` (an int) instead of
            squashing it (:class:`~anomalib_ncd.data.letterbox.Letterbox`; crop the detector's maps
            back with :func:`~anomalib_ncd.data.letterbox.unletterbox_map`).

    Returns:
        The datamodule (call ``setup()`` or pass it to ``Engine.fit``).

    Raises:
        ValueError: see :func:`to_anomalib_samples`.
    """
    samples = to_anomalib_samples(table, mask_cache_dir=mask_cache_dir)
    datamodule = SampleTabular(
        name=name,
        samples=samples,
        root=None,
        train_batch_size=train_batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        augmentations=resize_augmentation(image_size, letterbox),
        test_split_mode=choose_test_split_mode(samples),
        val_split_mode=VAL_SPLIT_MODE,
        seed=seed,
    )
    datamodule.category = category
    return datamodule


def mvtec_datamodule(
    root: str | Path,
    category: str,
    *,
    image_size: ImageSize | None = None,
    train_batch_size: int = 32,
    eval_batch_size: int = 32,
    num_workers: int = 0,
) -> MVTecAD:
    """Build anomalib's ``MVTecAD`` datamodule for a folder in the MVTec AD layout (e.g. synthetic).

    Its images are read with our reader (:class:`SampleMVTecAD`).

    Unlike :func:`load_mvtec_ad <anomalib_ncd.data.mvtec.load_mvtec_ad>`, anomalib keeps the
    ``combined`` folder if there is one; use :func:`to_anomalib_datamodule` on the loaded table to
    drop it.

    Args:
        root: the dataset root.
        category: the category folder.
        image_size: resize in the datamodule (see :func:`to_anomalib_datamodule`).
        train_batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: data-loader worker processes.

    Returns:
        The datamodule (an ``MVTecAD``).
    """
    return SampleMVTecAD(
        root=root,
        category=category,
        train_batch_size=train_batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        augmentations=resize_augmentation(image_size),
    )


def defect_type_lookup(table: pd.DataFrame) -> dict[str, str]:
    """Map each ``image_path`` of a sample table to its defect type (to join anomalib's outputs).

    anomalib keeps the image paths it was given, so ``batch.image_path`` entries are keys here.

    Args:
        table: a sample table.

    Returns:
        ``{image_path: defect_type}``.
    """
    return dict(zip(table["image_path"].astype(str), table["defect_type"].astype(str), strict=True))


def choose_test_split_mode(samples: pd.DataFrame) -> TestSplitMode:
    """Pick anomalib's test split mode that keeps the test rows of an anomalib samples table as they are.

    anomalib drops the normal test images under ``TestSplitMode.NONE`` and, under ``FROM_DIR``,
    moves training images into a test set that has no normal image; the mode must follow the table.

    Args:
        samples: a table from :func:`to_anomalib_samples`.

    Returns:
        ``TestSplitMode.FROM_DIR`` when the test rows include a normal image, ``TestSplitMode.NONE``
        otherwise.
    """
    test_has_normal = bool(((samples["split"] == "test") & (samples["label_index"] == 0)).any())
    return TestSplitMode.FROM_DIR if test_has_normal else TestSplitMode.NONE


def resize_augmentation(image_size: ImageSize | None, letterbox: bool = False) -> Resize | Letterbox | None:
    """Return the datamodule transform that resizes images and masks, or ``None`` to keep their size.

    Args:
        image_size: ``(height, width)``, one int for a square, or ``None``.
        letterbox: keep the aspect ratio inside the square (``image_size`` must be one side).

    Returns:
        An antialiased ``Resize``, a :class:`~anomalib_ncd.data.letterbox.Letterbox`, or ``None``.

    Raises:
        ValueError: when a letterbox is asked for a non-square size.
    """
    if image_size is None:
        return None
    if letterbox:
        sides = {image_size} if isinstance(image_size, int) else set(image_size)
        if len(sides) != 1:
            msg = f"a letterbox needs a square input size, got {image_size}"
            raise ValueError(msg)
        return Letterbox(sides.pop())
    size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    return Resize(size, antialias=True)
