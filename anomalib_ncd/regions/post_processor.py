# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib post-processor that binarises anomaly maps with the fast, set-level MEBin.

It plays the role of anomalib 2.7's
:class:`~anomalib.post_processing.MEBinPostProcessor`: a subclass of anomalib's
:class:`~anomalib.post_processing.PostProcessor` that keeps its score
normalisation and image-level thresholding (``pred_score``, ``pred_label``,
normalised ``anomaly_map``) and sets ``pred_mask`` from MEBin. It differs in two
ways:

* **Set-level search range.** MEBin's range (largest and smallest per-image peak)
  belongs to the whole set being binarised, not to one batch. The per-image peaks
  of the *validation* maps are accumulated batch by batch and the range is fixed
  at the end of the validation epoch (it is stored in buffers, so it travels with
  the checkpoint). For anomalib's MVTec-style datamodules the validation split is
  the test split (``val_split_mode="same_as_test"``), which is exactly the
  transductive set AnomalyNCD binarises. A range can also be given
  (``score_range``), fitted on any maps (:meth:`fit_range`) or set
  (:meth:`set_range`).
* **Raw maps.** MEBin runs on the raw anomaly maps, before anomalib's
  normalisation: that normalisation clamps to ``[0, 1]`` and the clamped plateau
  would merge components. MEBin depends only on the order of the scores, so
  nothing else changes.

Without any range (e.g. ``predict`` from a model that never validated), each
batch is binarised with its own range, as anomalib's post-processor does, and a
warning says so once. A batch of a single image has a collapsed range; MEBin then
uses that image's minimum as lower bound (with a warning), i.e. the map is
searched over its own full value range.

The MEBin part runs on the CPU with NumPy/OpenCV and is not exportable to
ONNX/OpenVINO (anomalib's kornia version is, at a very large cost in speed).

Example:
    >>> from anomalib.models import Patchcore
    >>> from anomalib_ncd.regions.post_processor import MEBinPostProcessor
    >>> model = Patchcore(backbone="resnet18", pre_trained=False, post_processor=MEBinPostProcessor())
"""

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anomalib.data import Batch, InferenceBatch
from anomalib.post_processing import PostProcessor
from lightning import LightningModule, Trainer

from anomalib_ncd.regions.mebin import LowerBound, MEBin


class MEBinPostProcessor(PostProcessor):
    """Post-processor whose ``pred_mask`` comes from set-level MEBin.

    Args:
        step: Step of MEBin's threshold sweep on the ``0 .. 255`` scale.
        min_interval_len: Minimum length of a stable interval.
        erode: Erode binary maps with a ``kernel_size`` square kernel.
        kernel_size: Side of the erosion kernel.
        connectivity: Component connectivity, 4 or 8.
        lower_bound: How MEBin's lower range bound is chosen (see :class:`MEBin`).
        integer_threshold: Truncate thresholds to integers (see :class:`MEBin`).
        n_jobs: Threads used to binarise a batch; ``None`` uses every core.
        score_range: Known ``(min_th, max_th)`` in raw anomaly-map units; otherwise
            the range is fitted on the validation maps.
        **kwargs: Passed to :class:`~anomalib.post_processing.PostProcessor`
            (``enable_normalization``, ``image_sensitivity``, ...).

    Example:
        >>> import torch
        >>> from anomalib.data import InferenceBatch
        >>> post_processor = MEBinPostProcessor(score_range=(0.2, 1.0), enable_normalization=False)
        >>> maps = torch.full((2, 32, 32), 0.1)
        >>> maps[0, 8:20, 8:20] = 1.0
        >>> out = post_processor(InferenceBatch(anomaly_map=maps))
        >>> out.pred_mask.shape, bool(out.pred_mask[1].any())
        (torch.Size([2, 32, 32]), False)
    """

    def __init__(
        self,
        *,
        step: int = 4,
        min_interval_len: int = 4,
        erode: bool = True,
        kernel_size: int = 6,
        connectivity: int = 8,
        lower_bound: LowerBound = "min_peak",
        integer_threshold: bool | None = None,
        n_jobs: int | None = 1,
        score_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.min_interval_len = min_interval_len
        self.erode = erode
        self.kernel_size = kernel_size
        self.connectivity = connectivity
        self.lower_bound = lower_bound
        self.integer_threshold = integer_threshold
        self.n_jobs = n_jobs
        self._make_mebin()  # validates the parameters now rather than at the first batch
        self.register_buffer("mebin_min_th", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("mebin_max_th", torch.tensor(float("nan"), dtype=torch.float64))
        self.mebin_min_th: torch.Tensor
        self.mebin_max_th: torch.Tensor
        self._range_fitter: MEBin | None = None
        self._warned_batch_range = False
        if score_range is not None:
            self.set_range(*score_range)

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        return (
            *super()._checkpoint_config_keys,
            "step",
            "min_interval_len",
            "erode",
            "kernel_size",
            "connectivity",
            "lower_bound",
            "integer_threshold",
            "n_jobs",
        )

    # ------------------------------------------------------------------ range
    @property
    def score_range(self) -> tuple[float, float] | None:
        """The set-level ``(min_th, max_th)`` in raw map units, or ``None`` before it is known."""
        low, high = float(self.mebin_min_th), float(self.mebin_max_th)
        if math.isnan(low) or math.isnan(high):
            return None
        return low, high

    def set_range(self, min_th: float, max_th: float) -> None:
        """Use a known search range (raw anomaly-map units) for all later batches.

        Args:
            min_th: Lower end of the range.
            max_th: Upper end of the range.
        """
        self._make_mebin().set_range(min_th, max_th)  # validates
        self.mebin_min_th.fill_(float(min_th))
        self.mebin_max_th.fill_(float(max_th))

    def fit_range(self, anomaly_maps: torch.Tensor | Sequence[torch.Tensor] | np.ndarray) -> None:
        """Fit the search range on raw anomaly maps of the whole set to binarise.

        Args:
            anomaly_maps: ``(N, H, W)`` / ``(N, 1, H, W)`` maps, or a sequence of 2-D maps.
        """
        fitter = self._make_mebin().fit(_to_numpy_maps(anomaly_maps))
        self.set_range(*fitter.fitted_range())

    def _make_mebin(self) -> MEBin:
        return MEBin(
            step=self.step,
            min_interval_len=self.min_interval_len,
            erode=self.erode,
            kernel_size=self.kernel_size,
            connectivity=self.connectivity,
            lower_bound=self.lower_bound,
            integer_threshold=self.integer_threshold,
            n_jobs=self.n_jobs,
        )

    # -------------------------------------------------------------- callbacks
    # anomalib's PostProcessor narrows Lightning's outputs (STEP_OUTPUT) to its Batch; this keeps its signature
    def on_validation_batch_end(  # type: ignore[override]
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Update anomalib's statistics and accumulate the per-image peaks of the raw maps.

        Args:
            trainer: Lightning trainer.
            pl_module: Lightning module.
            outputs: Validation batch with raw predictions.
            *args: Unused.
            **kwargs: Unused.
        """
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)
        if outputs.anomaly_map is None:
            return
        if self._range_fitter is None:
            self._range_fitter = self._make_mebin()
        self._range_fitter.partial_fit(_to_numpy_maps(outputs.anomaly_map))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fix anomalib's thresholds and MEBin's set-level range from the validation epoch.

        Args:
            trainer: Lightning trainer.
            pl_module: Lightning module.
        """
        super().on_validation_epoch_end(trainer, pl_module)
        fitter, self._range_fitter = self._range_fitter, None
        if fitter is not None and fitter.is_fitted:
            if fitter.range_note_ is not None:
                warnings.warn(fitter.range_note_, RuntimeWarning, stacklevel=2)
            self.set_range(*fitter.fitted_range())

    # ------------------------------------------------------------ processing
    def forward(self, predictions: InferenceBatch) -> InferenceBatch:
        """Post-process raw predictions: normalise scores, threshold labels, MEBin masks.

        Args:
            predictions: Batch with at least ``pred_score`` or ``anomaly_map``.

        Returns:
            InferenceBatch: ``pred_score``, ``pred_label``, normalised ``anomaly_map`` and
            the MEBin ``pred_mask``.

        Raises:
            ValueError: If neither ``pred_score`` nor ``anomaly_map`` is given.
        """
        raw_map = predictions.anomaly_map
        pred_score: torch.Tensor | None
        if predictions.pred_score is not None:
            pred_score = predictions.pred_score
        elif raw_map is not None:
            pred_score = torch.amax(raw_map, dim=(-2, -1))
        else:
            msg = "At least one of pred_score or anomaly_map must be provided."
            raise ValueError(msg)
        anomaly_map = raw_map
        if self.enable_normalization:
            pred_score = self._normalize(pred_score, self.image_min, self.image_max, self.image_threshold)
            anomaly_map = self._normalize(raw_map, self.pixel_min, self.pixel_max, self.pixel_threshold)
        pred_label = pred_mask = None
        if self.enable_thresholding:
            pred_label = self._apply_threshold(pred_score, self.normalized_image_threshold)
            if raw_map is not None:
                pred_mask = self.binarize(raw_map)
        return InferenceBatch(
            pred_score=pred_score, pred_label=pred_label, anomaly_map=anomaly_map, pred_mask=pred_mask
        )

    def post_process_batch(self, batch: Batch) -> None:
        """Normalise and threshold a test/predict batch in place; ``pred_mask`` comes from MEBin.

        Args:
            batch: Batch with raw predictions.
        """
        raw_map = batch.anomaly_map  # normalize_batch replaces, never modifies, the tensor
        if self.enable_normalization:
            self.normalize_batch(batch)
        if not self.enable_thresholding:
            return
        if batch.pred_label is None and batch.pred_score is not None:
            batch.pred_label = self._apply_threshold(batch.pred_score, self.normalized_image_threshold)
        if batch.pred_mask is None and raw_map is not None:
            batch.pred_mask = self.binarize(raw_map)

    def binarize(self, anomaly_maps: torch.Tensor) -> torch.Tensor:
        """MEBin masks for raw anomaly maps, with the set-level range when known.

        Args:
            anomaly_maps: ``(B, H, W)`` or ``(B, 1, H, W)`` raw anomaly maps.

        Returns:
            torch.Tensor: Boolean masks with the shape and device of ``anomaly_maps``.
        """
        maps = _to_numpy_maps(anomaly_maps)
        mebin = self._make_mebin()
        score_range = self.score_range
        if score_range is None:
            if not self._warned_batch_range:
                warnings.warn(
                    "MEBinPostProcessor has no set-level range (no validation epoch, score_range or fit_range): "
                    "using the range of each batch instead, which depends on the batch composition.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned_batch_range = True
            mebin.fit(maps)
        else:
            mebin.set_range(*score_range)
        masks = np.stack([result.mask for result in mebin.transform(maps)])
        return torch.from_numpy(masks).reshape(anomaly_maps.shape).to(anomaly_maps.device)


def _to_numpy_maps(anomaly_maps: torch.Tensor | Sequence[torch.Tensor] | np.ndarray) -> list[np.ndarray]:
    """Raw maps as a list of 2-D float arrays (a channel axis of size 1 is dropped)."""
    if isinstance(anomaly_maps, torch.Tensor | np.ndarray):
        items = list(anomaly_maps) if anomaly_maps.ndim >= 3 else [anomaly_maps]
    else:
        items = list(anomaly_maps)
    maps = []
    for item in items:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu()
            # NumPy has no bfloat16; half precision is widened too.
            array = tensor.float().numpy() if tensor.dtype in {torch.float16, torch.bfloat16} else tensor.numpy()
        else:
            array = np.asarray(item)
        maps.append(array[0] if array.ndim == 3 and array.shape[0] == 1 else array)
    return maps
