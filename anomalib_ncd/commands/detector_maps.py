"""Where a run's anomaly maps come from: saved maps, an anomalib checkpoint, or a Patchcore trained here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from anomalib_ncd.backbones.offline_weights import DEFAULT_BACKBONE
from anomalib_ncd.data.letterbox import MIN_INPUT_SIZE, choose_input_size
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.results import RunFolder

if TYPE_CHECKING:
    from anomalib_ncd.maps.export import ValidationMapCollector

logger = logging.getLogger("anomalib_ncd")


@dataclass(frozen=True)
class DetectorSettings:
    """The anomaly detector whose maps the run uses.

    Give ``checkpoint`` (a trained anomalib model) or ``maps`` (saved maps); with neither, anomalib's
    Patchcore is trained on the dataset's normal training images with the settings below.

    Attributes:
        checkpoint: an anomalib checkpoint, e.g.
            ``results/Patchcore/MVTecAD/bottle/latest/weights/lightning/model.ckpt``.
        model: the checkpoint's model class (``Patchcore``, ``anomalib_ncd.models.Prn``...); taken
            from the results path ``results/<Model>/...`` when omitted.
        maps: a folder of saved anomaly maps (``index.csv`` from ``AnomalyMapExporter``, or one map
            per image in the dataset's layout, as the AnomalyNCD authors distribute them).
        backbone: timm backbone of the Patchcore trained here.
        image_size: detector input size (square side) of the Patchcore trained here, and the size
            images are batched at for a checkpoint whose input size cannot be read from its
            pre-processor; ``auto`` chooses it from the training images
            (:func:`~anomalib_ncd.data.letterbox.choose_input_size`: their median long side, in
            ``[256, 512]``; 256 for a checkpoint).
        letterbox: the Patchcore trained here sees each image with its aspect ratio kept inside the
            square (:mod:`~anomalib_ncd.data.letterbox`) instead of squashed; its maps are cropped
            back to the image. Checkpoints from elsewhere are run as they were trained (squashed).
        skip_missing_maps: with ``maps``, leave out (with a warning and their count) the images
            that have no saved map; by default one missing map is an error naming the image.
        coreset_sampling_ratio: Patchcore's memory-bank subsampling.
        max_train_images: train the Patchcore on at most this many normal images (a deterministic
            sample; ``None``: all). Fewer images train faster on a few CPU cores.
        trust_checkpoint: load ``checkpoint`` even when it needs types outside the allow-list of
            safe types (``torch.load(weights_only=False)``). RISK: unpickling such a file can run
            arbitrary code on this machine; only for a checkpoint you made yourself or got from a
            source you trust. Off: the checkpoint is read as tensors and plain data only, and one
            that needs more is refused, naming the types.
    """

    checkpoint: str | None = None
    model: str | None = None
    maps: str | None = None
    skip_missing_maps: bool = False
    backbone: str = DEFAULT_BACKBONE
    image_size: int | Literal["auto"] = "auto"
    letterbox: bool = True
    coreset_sampling_ratio: float = 0.01
    max_train_images: int | None = None
    trust_checkpoint: bool = False

    def check(self) -> None:
        """Check what can be checked before a run starts (so a typo leaves no half-made run folder).

        A checkpoint is read as data here (:func:`~anomalib_ncd.maps.from_anomalib.check_anomalib_checkpoint`):
        an unsafe, corrupt or non-anomalib file fails before anything is written.

        Raises:
            ValueError: when both a checkpoint and maps are given, or the checkpoint is unreadable,
                not an anomalib checkpoint, or of no known model class.
            UnsafeCheckpointError: when the checkpoint needs types outside the allow-list.
            FileNotFoundError: when the checkpoint or the maps folder does not exist.
        """
        if self.checkpoint is not None and self.maps is not None:
            msg = "give the detector's checkpoint or saved maps, not both"
            raise ValueError(msg)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            msg = f"detector checkpoint not found: {self.checkpoint}"
            raise FileNotFoundError(msg)
        if self.maps is not None and not Path(self.maps).is_dir():
            msg = f"anomaly-map folder not found: {self.maps}"
            raise FileNotFoundError(msg)
        if self.checkpoint is not None:
            from anomalib_ncd.maps.from_anomalib import check_anomalib_checkpoint

            check_anomalib_checkpoint(self.checkpoint, self.model, trust_checkpoint=self.trust_checkpoint)

    def check_data(self, table: pd.DataFrame, dataset: str) -> None:
        """Check that a Patchcore can be trained here when no checkpoint or maps are given.

        Args:
            table: the sample table of the run.
            dataset: its name, for the message.

        Raises:
            ValueError: when the detector is to be trained and the table has no normal training image.
        """
        if self.checkpoint is None and self.maps is None and not (table["split"] == "train").any():
            msg = (
                f"dataset {dataset} has no normal training images to train a detector on; give "
                "--detector.checkpoint or --detector.maps, or, for a typed folder root/<type>/*, "
                "--normal_train_share 0.5 (a seeded share of its normal folder trains the detector)"
            )
            raise ValueError(msg)


def anomaly_maps(
    settings: DetectorSettings,
    table: pd.DataFrame,
    dataset: str,
    category: str,
    workdir: Path,
    *,
    accelerator: str = "auto",
    devices: int | str = 1,
    seed: int = 0,
    skip_option: str = "--detector.skip_missing_maps true",
) -> tuple[AnomalyMapSet, str | None, str | None, dict[str, Any] | None]:
    """The raw anomaly maps of the table's test images.

    Args:
        settings: where the maps come from.
        table: the sample table (test rows are mapped; normal train rows train a detector).
        dataset: dataset name (anomalib's results path of a detector trained here).
        category: category name.
        workdir: the run folder; a detector trained here, anomalib's engine outputs and the masks
            converted for anomalib go to ``<workdir>/detector``.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        seed: seed of the training-image sample.
        skip_option: the option that sets ``settings.skip_missing_maps``, for the missing-map error.

    Returns:
        The maps (with the table's ground truth), the detector checkpoint, the detector's model
        class (its name or import path) and how images are fed to it (``{"image_size": ...,
        "letterbox": ...}``): what ``predict`` needs to run it the same way; ``None`` for saved maps.

    Raises:
        FileNotFoundError: when the checkpoint or the maps folder does not exist.
        ValueError: when both a checkpoint and maps are given, or a detector is to be trained on a
            dataset without normal training images.
    """
    from anomalib_ncd.maps.folder import check_map_coverage, load_map_folder
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model, model_class_name

    test = table[table["split"] == "test"]
    settings.check()
    if settings.maps is not None:
        map_set = load_map_folder(settings.maps, samples=test)
        check_map_coverage(map_set, test, skip_missing=settings.skip_missing_maps, skip_option=skip_option)
        return map_set, None, None, None
    letterbox = False
    validated: AnomalyMapSet | None = None  # the test images' maps from a fit here, when it made them
    if settings.checkpoint is not None:
        model = load_anomalib_model(settings.checkpoint, settings.model, trust_checkpoint=settings.trust_checkpoint)
        checkpoint = str(Path(settings.checkpoint).resolve())
        fallback = MIN_INPUT_SIZE if settings.image_size == "auto" else settings.image_size
        image_size: int | tuple[int, int] = input_size(model) or fallback
    else:
        model, checkpoint, image_size, validated = train_patchcore(
            settings, table, dataset, category, workdir, accelerator, devices, seed
        )
        letterbox = settings.letterbox
    if validated is None:  # a checkpoint, or a fit whose validation pass did not map the test images
        model.visualizer = None  # a checkpoint brings anomalib's visualiser back: only the maps are wanted
        maps = detector_maps_of(
            model, test, dataset, category, image_size, letterbox, accelerator, devices, RunFolder(workdir).detector
        )
    else:
        maps = validated
    return maps, checkpoint, model_class_name(model), {"image_size": image_size, "letterbox": letterbox}


def detector_maps_of(
    model: Any,
    samples: pd.DataFrame,
    dataset: str,
    category: str,
    image_size: int | tuple[int, int],
    letterbox: bool,
    accelerator: str = "auto",
    devices: int | str = 1,
    root_dir: Path | None = None,
) -> AnomalyMapSet:
    """Run a detector on the images of a sample table and collect its raw maps, letterboxed or not.

    Args:
        model: the anomalib detector.
        samples: the images (every row is mapped).
        dataset: dataset name (anomalib's results path).
        category: category name.
        image_size: the detector's input size.
        letterbox: letterbox the images (an int ``image_size``); the maps are cropped back to each
            image's content, so they have the image's aspect ratio.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        root_dir: anomalib's engine root and the converted masks' folder (keep them inside the
            run); ``None``: anomalib's defaults.

    Returns:
        The maps, with the table's ground truth.
    """
    from anomalib_ncd.data import to_anomalib_datamodule
    from anomalib_ncd.maps.from_anomalib import predict_maps

    datamodule = to_anomalib_datamodule(
        detector_table(samples),
        dataset,
        category=category,
        image_size=image_size,
        letterbox=letterbox,
        mask_cache_dir=None if root_dir is None else root_dir / "masks",
    )
    # anomalib's engine (and a checkpoint's visualiser) write under its root: keep it in the run
    engine_root: dict[str, Any] = {} if root_dir is None else {"default_root_dir": str(root_dir)}
    maps = predict_maps(model, datamodule, samples=samples, accelerator=accelerator, devices=devices, **engine_root)
    return unletterboxed(maps) if letterbox else maps


def unletterboxed(maps: AnomalyMapSet) -> AnomalyMapSet:
    """The maps of letterboxed detector inputs cropped back to each image's content (in place).

    Args:
        maps: maps of letterboxed inputs, with the images' shapes.

    Returns:
        The same set, each map with its image's aspect ratio.
    """
    from anomalib_ncd.data.letterbox import unletterbox_map

    maps.maps = [unletterbox_map(m, shape) for m, shape in zip(maps.maps, maps.image_shapes, strict=True)]
    return maps


def detector_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table the detector's datamodule gets: masks dropped when only some defect images have one.

    anomalib needs a mask for every defect image or for none (its pixel metrics); discovery needs
    none, so a partly annotated set trains and runs the detector without masks (image metrics only).

    Args:
        table: the run's sample table.

    Returns:
        The table, without ``mask_path`` and ``boxes`` when the defects are partly annotated.
    """
    from anomalib_ncd.data.masks import is_annotated

    defects = table[~table["is_normal"].astype(bool)]
    annotated = sum(is_annotated(row) for _, row in defects.iterrows())
    if 0 < annotated < len(defects):
        logger.info(
            "%d of %d defect images have no mask: the detector runs without masks (no pixel metrics)",
            len(defects) - annotated,
            len(defects),
        )
        return table.assign(mask_path=None, boxes=None)
    return table


def input_size(model: Any) -> tuple[int, int] | None:
    """The image size an anomalib model's pre-processor resizes to, when it has a plain resize.

    Args:
        model: an anomalib model.

    Returns:
        ``(height, width)``, or ``None`` when unknown.
    """
    from torchvision.transforms import v2

    transform = getattr(getattr(model, "pre_processor", None), "transform", None)
    steps = getattr(transform, "transforms", [transform])
    for step in steps:
        if isinstance(step, v2.Resize) and step.size is not None and len(step.size) == 2:
            return int(step.size[0]), int(step.size[1])
    return None


def train_patchcore(
    settings: DetectorSettings,
    table: pd.DataFrame,
    dataset: str,
    category: str,
    workdir: Path,
    accelerator: str,
    devices: int | str,
    seed: int,
) -> tuple[Any, str, int, AnomalyMapSet | None]:
    """Train anomalib's Patchcore on the table's normal training images, as ``discover`` does.

    anomalib's fit validates the detector on the table's test images (its thresholds); their raw
    maps are taken from that pass, so they need no second pass of the detector.

    Args:
        settings: backbone, input size (``auto``: from the images), letterbox, coreset ratio, cap.
        table: the sample table (its ``train`` rows train).
        dataset: dataset name (anomalib's results path).
        category: category name.
        workdir: the checkpoint goes to ``<workdir>/detector``.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        seed: seed of the training-image sample when capped.

    Returns:
        The trained model, its checkpoint path, its input side and the maps of the table's test
        images from the validation pass (``None`` when that pass did not map each of them once,
        e.g. split over several devices: map them with :func:`detector_maps_of` then).

    Raises:
        ValueError: when the table has no normal training image.
    """
    from anomalib.models import Patchcore

    from anomalib_ncd.data import to_anomalib_datamodule
    from anomalib_ncd.data.image_io import read_image_size
    from anomalib_ncd.data.mtd import cap_detector_training
    from anomalib_ncd.detector import make_patchcore, train_detector
    from anomalib_ncd.maps.export import ValidationMapCollector

    settings.check_data(table, dataset)
    if settings.max_train_images is not None:
        table = cap_detector_training(table, settings.max_train_images, seed)
    train = table[table["split"] == "train"]
    if settings.image_size == "auto":
        size = choose_input_size([read_image_size(path) for path in train["image_path"]])
    else:
        size = int(settings.image_size)
    detector_dir = RunFolder(workdir).detector
    datamodule = to_anomalib_datamodule(
        detector_table(table),
        dataset,
        category=category,
        image_size=size,
        letterbox=settings.letterbox,
        mask_cache_dir=detector_dir / "masks",
    )
    model = make_patchcore(
        settings.backbone,
        coreset_sampling_ratio=settings.coreset_sampling_ratio,
        # the datamodule already gives size x size inputs: the pre-processor must not resize again
        pre_processor=Patchcore.configure_pre_processor(image_size=(size, size)),
        visualizer=False,  # its images would go to ./results, outside the run
    )
    how = "letterboxed" if settings.letterbox else "squashed"
    logger.info("Training Patchcore (%s) on %d normal images, %d px %s", settings.backbone, len(train), size, how)
    collector = ValidationMapCollector()
    engine = train_detector(
        model,
        datamodule,
        root_dir=detector_dir,
        max_epochs=1,
        accelerator=accelerator,
        devices=devices,
        callbacks=[collector],
    )
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = engine.trainer.checkpoint_callback
    if not isinstance(checkpoint, ModelCheckpoint):  # anomalib's Engine adds one (not in barebones mode)
        msg = "the detector's training wrote no checkpoint (no ModelCheckpoint callback)"
        raise RuntimeError(msg)
    return model, str(Path(checkpoint.best_model_path).resolve()), size, _validation_maps(collector, table, settings)


def _validation_maps(
    collector: ValidationMapCollector, table: pd.DataFrame, settings: DetectorSettings
) -> AnomalyMapSet | None:
    """The validation pass's maps, when it mapped every test image of the table exactly once."""
    from anomalib_ncd.maps.from_anomalib import map_set_of

    test = table[table["split"] == "test"]
    mapped = sorted(str(Path(record["image_path"]).resolve()) for record in collector.records)
    if mapped != sorted(str(Path(path).resolve()) for path in test["image_path"]):
        return None
    maps = map_set_of(collector.records, test)
    return unletterboxed(maps) if settings.letterbox else maps
