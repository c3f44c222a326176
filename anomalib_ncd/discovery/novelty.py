"""Unknown-class rejection: a region or image that fits none of the model's classes is ``unknown``.

**Score.** The prototype heads are a mixture of von Mises-Fisher distributions: unit mean
directions ``mu_k`` and one concentration ``kappa = 1 / student_temperature``
(:class:`~anomalib_ncd.discovery.heads.PrototypeHeads`). Under class ``k`` a unit feature ``x`` has
log-density ``log C_D(kappa) + kappa * mu_k^T x``. The default score, ``"vmf"``, is the negative
log-likelihood of ``x`` under its best-fitting class, without the constant shared by all classes:

    ``unknown_score = -kappa * max_k mu_k^T x``        (higher: more unknown)

It is the rule of the feature request read literally: a region is unknown when it fits *no* class,
i.e. when even the class that explains it best finds it unlikely. It is chosen on that principle,
not on benchmark numbers, and for two properties the alternatives lack: the decision depends on
``kappa`` not at all (the score is a monotone function of the best cosine and the threshold is a
quantile of the same score), so a training temperature does not move it; and it is the typicality
that continual discovery (:mod:`~anomalib_ncd.discovery.continual`) uses to call regions new-kind,
so the package has one notion of "fits no class".

``benchmarks/ood_mtd.py`` compares it with two other scores of the same heads:

* ``"energy"``: the free energy ``-T * logsumexp_k(mu_k^T x / T)`` with ``T = 1 / kappa`` (Liu et
  al., 2020): the negative log-density of the whole equal-weight mixture. Where a region lies
  between classes, several moderately close prototypes make it look typical though it fits none
  of them, and the ranking changes with ``T``.
* ``"msp"``: one minus the largest softmax probability (Hendrycks & Gimpel, 2017). It measures how
  ambiguous the choice between classes is, not how atypical the region is: a region far from every
  prototype but clearly nearest to one looks certain. The usual baseline.

**Frozen-space neighbours.** ``"knn"`` asks the same question away from the prototypes: the cosine
distance from a region's *descriptor* to its ``k``-th nearest training region (Sun et al., 2022),
where the descriptor is the region's frozen backbone tokens (the plain view) averaged with the
anomaly coverage of each patch as weight, i.e. the defect's own appearance without its
surroundings (:func:`anomaly_pooled`). Discovery training pulls every region towards one of the
prototypes, which is what lets a new kind of defect hide in an old class; the frozen space is never
trained, so a new kind stays where the backbone puts it. The descriptors of the training regions
(labeled known-class regions included: they are known kinds too) are kept in the model and its
checkpoint; a training region's own score skips itself (its ``k + 1``-th neighbour).
``benchmarks/ood_frozen_knn.py`` shows why the pooling is the anomaly's alone: on MTD with
ground-truth regions the left-out-type AUROC is 0.795 with it and 0.656 with the guided pooling.

**Threshold.** After training, the score of every training (discovery) region where something was
found is computed and the threshold is their ``1 - quantile`` quantile (``inverted_cdf``: an
actual training score), so exactly ``floor(quantile * N)`` of the ``N`` training regions score
above it (when their scores are distinct): ``quantile`` is the false-rejection rate on the
training regions, e.g. 5 %. Regions the model was fitted on score a little more typical than new
regions of the same classes, so expect a somewhat higher rate on new images (the benchmark
measures it). The threshold is stored in the model (a buffer, so it is in the checkpoint). The
rule applies to the discovery set too: its own least typical regions and images (that share of
them) are marked unknown in the results of ``discover``, as candidates for review.

**Images.** An image's score is the weighted mean of its regions' scores with the weights of the
class fusion (:mod:`~anomalib_ncd.discovery.fusion`, ``softmax(sqrt(area) / T)``): its class
comes from that weighting, so its verdict does too, and a small stray region cannot outvote the
large one that explains the image. Images get a threshold of their own, the same quantile of the
training images' fused scores, so the false-rejection rate holds per image as well.

**Nothing found.** A whole-image region (the region stage found nothing) is the detector's verdict
"normal": it gets no score (``NaN``) and is never unknown, and so neither is its image.

Example:
    >>> import numpy as np
    >>> cosines = np.array([[0.9, 0.1], [0.2, 0.3], [-0.5, -0.1]])
    >>> unknown_scores(cosines, "vmf", temperature=0.1).round(1).tolist()
    [-9.0, -3.0, 1.0]
    >>> threshold = calibrate_threshold(np.arange(20.0), quantile=0.1)
    >>> threshold, int((np.arange(20.0) > threshold).sum())
    (17.0, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from anomalib_ncd.discovery.fusion import fuse_regions

ScoreName = Literal["vmf", "energy", "msp", "knn"]
"""Name of an unknown score (see the module docstring)."""

SCORES: tuple[str, ...] = get_args(ScoreName)
"""Every unknown score the model offers."""

PROTOTYPE_SCORES: tuple[str, ...] = ("vmf", "energy", "msp")
"""The scores :func:`unknown_scores` computes from prototype cosines (``"knn"`` uses :func:`knn_scores`)."""

ROUNDING = 1e-5
"""Relative margin above a threshold before a score counts as above it (float32 recomputation noise)."""

UNKNOWN = "unknown"
"""The ``class_name`` of unknown images and regions in result tables (``pred_class`` keeps the nearest class)."""


@dataclass(frozen=True)
class NoveltySettings:
    """How the model rejects regions and images that fit none of its classes.

    Attributes:
        enabled: mark regions and images ``unknown``; when ``False`` the scores are still computed
            but nothing is rejected.
        score: ``"vmf"`` (default: minus kappa times the best prototype cosine), ``"energy"``,
            ``"msp"`` or ``"knn"`` (frozen-space distance to the training regions); see
            :mod:`anomalib_ncd.discovery.novelty`.
        quantile: share of the training regions (and of the training images) scored above the
            threshold: the false-rejection rate on the training set, in ``(0, 1)``.
        k: the neighbour rank of ``"knn"``.
    """

    enabled: bool = True
    score: ScoreName = "vmf"
    quantile: float = 0.05
    k: int = 5

    def __post_init__(self) -> None:
        """Check the score name and the quantile.

        Raises:
            ValueError: on an unknown score, a quantile outside ``(0, 1)`` or ``k < 1``.
        """
        if self.score not in SCORES:
            msg = f"novelty score must be one of {', '.join(SCORES)}, got {self.score!r}"
            raise ValueError(msg)
        if not 0 < self.quantile < 1:
            msg = f"novelty quantile must lie in (0, 1), got {self.quantile}"
            raise ValueError(msg)
        if self.k < 1:
            msg = f"novelty k must be >= 1, got {self.k}"
            raise ValueError(msg)


@dataclass
class UnknownVerdict:
    """Unknown scores and decisions of a set of regions and of their images.

    Attributes:
        region_scores: ``(R,)`` score of each region (higher: more unknown); ``NaN`` for whole-image
            regions.
        region_unknown: ``(R,)`` whether each region fits no class.
        image_scores: ``(I,)`` fused score of each image; ``NaN`` where nothing was found.
        image_unknown: ``(I,)`` whether each image fits no class.
    """

    region_scores: np.ndarray
    region_unknown: np.ndarray
    image_scores: np.ndarray
    image_unknown: np.ndarray


def unknown_scores(cosines: np.ndarray | Tensor, score: str = "vmf", temperature: float = 0.1) -> np.ndarray:
    """Unknown score of each feature from its cosines to the class prototypes (higher: more unknown).

    Args:
        cosines: ``(R, K)`` cosine between each unit feature and each unit prototype (one head).
        score: ``"vmf"``, ``"energy"`` or ``"msp"`` (``"knn"`` needs descriptors: :func:`knn_scores`).
        temperature: ``1 / kappa``, the student temperature of the heads' softmax.

    Returns:
        ``(R,)`` float32 scores.

    Raises:
        ValueError: on an unknown score name or a non-positive temperature.
    """
    if not temperature > 0:
        msg = f"temperature must be > 0, got {temperature}"
        raise ValueError(msg)
    if hasattr(cosines, "detach"):  # a torch tensor
        cosines = cosines.detach().float().cpu().numpy()
    logits = np.asarray(cosines, dtype=np.float64) / temperature
    best = logits.max(axis=1)
    if score == "vmf":
        values = -best
    elif score == "energy":
        # logsumexp around the largest logit, so kappa * cos never overflows
        values = -temperature * (best + np.log(np.exp(logits - best[:, None]).sum(axis=1)))
    elif score == "msp":
        values = 1.0 - 1.0 / np.exp(logits - best[:, None]).sum(axis=1)
    else:
        msg = f"score must be one of {', '.join(PROTOTYPE_SCORES)}, got {score!r}"
        raise ValueError(msg)
    return values.astype(np.float32)


def anomaly_pooled(tokens: Tensor, coverage: Tensor) -> Tensor:
    """Each region's descriptor: its patch tokens averaged with the anomaly coverage as weight.

    Args:
        tokens: ``(R, T, C)`` frozen tokens of the plain view; the last ``N`` are the patch tokens
            (a ViT's CLS token, when present, comes first and is skipped).
        coverage: ``(R, N)`` anomaly coverage of each patch, in ``[0, 1]``.

    Returns:
        ``(R, C)`` float32 descriptors; a region with no coverage (a whole image) takes the plain mean.
    """
    patches = tokens[:, -coverage.shape[1] :].float()
    weights = coverage.float()
    empty = weights.sum(dim=1) <= 0
    weights = torch.where(empty[:, None], torch.ones_like(weights), weights)
    return (patches * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True)


def knn_scores(descriptors: Tensor, bank: Tensor, k: int, skip_self: bool = False) -> np.ndarray:
    """Cosine distance of each descriptor to its ``k``-th nearest descriptor of ``bank``.

    Args:
        descriptors: ``(R, C)`` region descriptors.
        bank: ``(M, C)`` descriptors of the training regions.
        k: the neighbour rank (clipped to the bank's size).
        skip_self: the descriptors are members of the bank: take the ``k + 1``-th neighbour.

    Returns:
        ``(R,)`` float32 distances in ``[0, 2]``; ``NaN`` for all when the bank is empty.
    """
    if bank.shape[0] == 0:
        return np.full(descriptors.shape[0], np.nan, dtype=np.float32)
    queries = torch.nn.functional.normalize(descriptors.float(), dim=1)
    references = torch.nn.functional.normalize(bank.float().to(queries.device), dim=1)
    rank = min(k + int(skip_self), references.shape[0])
    distances = []
    for start in range(0, queries.shape[0], 1024):  # bounded memory for large sets
        similarity = queries[start : start + 1024] @ references.T
        distances.append(1.0 - similarity.topk(rank, dim=1).values[:, -1])
    if not distances:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(distances).cpu().numpy().astype(np.float32)


def calibrate_threshold(scores: np.ndarray, quantile: float) -> float:
    """The score above which a ``quantile`` share of the given (training) scores lies.

    Args:
        scores: ``(N,)`` unknown scores of the training regions or images (``NaN`` entries ignored).
        quantile: the false-rejection rate to allow, in ``(0, 1)``.

    Returns:
        The ``1 - quantile`` quantile (an actual score: exactly ``floor(quantile * N)`` distinct
        scores lie above it); ``NaN`` when no score is finite.

    Raises:
        ValueError: on a quantile outside ``(0, 1)``.
    """
    if not 0 < quantile < 1:
        msg = f"quantile must lie in (0, 1), got {quantile}"
        raise ValueError(msg)
    finite = np.asarray(scores, dtype=np.float32)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan")
    return float(np.quantile(finite, 1.0 - quantile, method="inverted_cdf"))


def fused_image_scores(
    region_scores: np.ndarray,
    areas: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    fusion_temperature: float,
) -> np.ndarray:
    """Each image's score: its regions' scores weighted like the class fusion; ``NaN`` regions skipped.

    Args:
        region_scores: ``(R,)`` region scores (``NaN`` for whole-image regions).
        areas: ``(R,)`` region areas.
        image_index: ``(R,)`` image of each region, in ``[0, n_images)``; every image has a region.
        n_images: number of images.
        fusion_temperature: ``T`` of the area softmax.

    Returns:
        ``(n_images,)`` float32 scores, ``NaN`` for images without a scored region.
    """
    scores = np.asarray(region_scores, dtype=np.float64)
    scored = np.isfinite(scores)
    index = np.asarray(image_index, dtype=np.int64)
    result = np.full(n_images, np.nan)
    if scored.any():
        images, compact = np.unique(index[scored], return_inverse=True)
        fused = fuse_regions(
            scores[scored, None], np.asarray(areas, dtype=np.float64)[scored], compact, len(images), fusion_temperature
        )
        result[images] = fused[:, 0]
    return result.astype(np.float32)


def judge(
    region_scores: np.ndarray,
    whole_image: np.ndarray,
    areas: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    fusion_temperature: float,
    thresholds: tuple[float, float],
    enabled: bool = True,
) -> UnknownVerdict:
    """Unknown decisions of regions and images at the calibrated thresholds.

    Args:
        region_scores: ``(R,)`` scores of :func:`unknown_scores`.
        whole_image: ``(R,)`` whole-image regions (nothing found): no score, never unknown.
        areas: ``(R,)`` region areas.
        image_index: ``(R,)`` image of each region.
        n_images: number of images.
        fusion_temperature: ``T`` of the area softmax (the class fusion's).
        thresholds: ``(region, image)`` thresholds; ``NaN`` (not calibrated) rejects nothing.
        enabled: ``False`` keeps the scores and rejects nothing.

    Returns:
        The verdict.
    """
    scores = np.asarray(region_scores, dtype=np.float32).copy()
    scores[np.asarray(whole_image, dtype=bool)] = np.nan
    image_scores = fused_image_scores(scores, areas, image_index, n_images, fusion_temperature)
    # the thresholds are training scores themselves: the same region computed again on another path
    # (batched differently, on another device) may land a rounding error above its own threshold
    region_threshold, image_threshold = (value + ROUNDING * max(1.0, abs(value)) for value in thresholds)
    # a comparison with NaN is False: unscored regions and uncalibrated models reject nothing
    with np.errstate(invalid="ignore"):
        region_unknown = (scores > region_threshold) & enabled
        image_unknown = (image_scores > image_threshold) & enabled
    return UnknownVerdict(scores, region_unknown, image_scores, image_unknown)


def calibrate(
    region_scores: np.ndarray,
    whole_image: np.ndarray,
    areas: np.ndarray,
    image_index: np.ndarray,
    fusion_temperature: float,
    quantile: float,
) -> tuple[float, float]:
    """Region and image thresholds from the training regions' scores.

    Args:
        region_scores: ``(R,)`` scores of the training regions.
        whole_image: ``(R,)`` whole-image regions (left out: they are never unknown).
        areas: ``(R,)`` region areas.
        image_index: ``(R,)`` image of each region (any integers; images are the distinct values).
        fusion_temperature: ``T`` of the area softmax.
        quantile: the false-rejection rate on the training regions and images.

    Returns:
        ``(region threshold, image threshold)``; ``NaN`` when nothing was found in any image.
    """
    scores = np.asarray(region_scores, dtype=np.float32).copy()
    scores[np.asarray(whole_image, dtype=bool)] = np.nan
    _, compact = np.unique(np.asarray(image_index, dtype=np.int64), return_inverse=True)
    image_scores = fused_image_scores(scores, areas, compact, int(compact.max()) + 1, fusion_temperature)
    return calibrate_threshold(scores, quantile), calibrate_threshold(image_scores, quantile)
