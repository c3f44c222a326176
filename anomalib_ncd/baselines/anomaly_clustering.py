# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""Anomaly Clustering (Sohn et al., WACV 2023): score-weighted patch pooling + Ward clustering.

"Anomaly Clustering: Grouping Images into Coherent Clusters of Anomaly Types" treats an image
as a bag of patch features ``z_i`` whose patch anomaly scores ``s_i`` say where the defect is.
The image embedding is the weighted average ``sum_i alpha_i z_i`` with
``alpha = softmax(s / tau)``, so the few anomalous patches dominate it instead of the large
normal background, and the embeddings are grouped by agglomerative (Ward) clustering.

Example:
    >>> import numpy as np
    >>> features = np.zeros((4, 3, 2))
    >>> features[:2, 0] = [1.0, 0.0]  # the defect patch of images 0 and 1
    >>> features[2:, 0] = [0.0, 1.0]  # the defect patch of images 2 and 3
    >>> scores = np.tile([5.0, 0.0, 0.0], (4, 1))
    >>> AnomalyClustering(n_clusters=2).fit_predict(features, scores).tolist()
    [1, 1, 0, 0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from anomalib_ncd.baselines.kmeans import _check_n_clusters, l2_normalize

__all__ = ["AnomalyClustering", "PatchFeatures", "PatchScores", "auto_temperature"]

PatchFeatures = np.ndarray | Sequence[np.ndarray]
"""Patch features of a set: one ``(N, P, C)`` array or a sequence of ``(P_i, C)`` arrays."""

PatchScores = np.ndarray | Sequence[np.ndarray]
"""Patch anomaly scores of a set: one ``(N, P)`` array or a sequence of ``(P_i,)`` arrays."""

Linkage = Literal["ward", "complete", "average", "single"]

_LINKAGES = ("ward", "complete", "average", "single")


def auto_temperature(patch_scores: PatchScores) -> float:
    """The label-free temperature rule: the standard deviation of all patch scores of the set.

    Args:
        patch_scores: Patch scores, an ``(N, P)`` array or a sequence of ``(P_i,)`` arrays.

    Returns:
        float: Population standard deviation of every score of every image (0 for constant scores).

    Example:
        >>> auto_temperature([np.array([0.0, 2.0]), np.array([1.0, 1.0, 1.0, 1.0])])
        0.5773502691896257
    """
    flat = np.concatenate([np.asarray(scores, dtype=np.float64).ravel() for scores in patch_scores])
    return float(flat.std())


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of ``scores / temperature``, stable for any score range; ``inf`` gives uniform weights."""
    if math.isinf(temperature):
        return np.full(scores.shape, 1.0 / scores.size)
    shifted = scores - scores.max()  # <= 0 everywhere, so exp() cannot overflow
    with np.errstate(over="ignore", under="ignore"):
        # A tiny temperature may push differences to -inf; exp(-inf) = 0 is the intended limit.
        logits = shifted / temperature
        weights = np.exp(logits)
    return weights / weights.sum()  # the maximum contributes exp(0) = 1, so the sum is >= 1


class AnomalyClustering:
    """Anomaly Clustering: softmax(score / tau)-weighted patch pooling, then agglomerative clustering.

    Every image ``n`` is a bag of patch features ``z_ni`` (rows of a ``(P_n, C)`` array) with patch
    anomaly scores ``s_ni``, e.g. from PatchCore. Its embedding is

    ``e_n = sum_i alpha_ni z_ni`` with ``alpha_n = softmax(s_n / tau)``,

    L2-normalised when ``normalize``; the embeddings are then clustered with
    :class:`sklearn.cluster.AgglomerativeClustering` (Ward linkage by default).

    Temperature rule. ``temperature="auto"`` sets ``tau`` to the standard deviation of all patch
    scores of the set being clustered (every patch of every image, population std). The rule looks
    at the scores only, never at labels, and makes the weights invariant to the detector's score
    scale and offset: multiplying or shifting all scores leaves the embeddings unchanged, and a
    patch one standard deviation above another always receives ``e`` times its weight. As limits,
    ``tau -> inf`` gives mean pooling and ``tau -> 0`` max-patch pooling (the highest-scoring patch
    only). When all scores are equal (std 0) every temperature gives uniform weights, so mean
    pooling is used and ``temperature_`` is ``inf``. A float ``temperature`` (positive; ``inf``
    allowed) is used as is, in score units.

    The method is transductive: :meth:`embed` and :meth:`fit` derive the "auto" temperature from
    the set they are given.

    Args:
        n_clusters: Number of clusters (expected defect classes).
        temperature: ``"auto"`` (the rule above) or a fixed positive ``tau``.
        linkage: Linkage of the agglomerative clustering; ``"ward"`` as in the paper.
        normalize: Whether to L2-normalise the image embeddings before clustering.

    Attributes:
        temperature_: The ``tau`` used in the last :meth:`fit` (``inf`` for mean pooling).
        embeddings_: Clustered image embeddings, shape ``(N, C)``.
        labels_: Cluster of every image, shape ``(N,)``.
        n_features_in_: Patch feature dimension ``C``.
    """

    def __init__(
        self,
        n_clusters: int,
        temperature: float | Literal["auto"] = "auto",
        linkage: Linkage = "ward",
        normalize: bool = True,
    ) -> None:
        _check_n_clusters(n_clusters)
        if isinstance(temperature, str):
            if temperature != "auto":
                msg = f"temperature must be 'auto' or a positive number, got {temperature!r}"
                raise ValueError(msg)
        elif isinstance(temperature, bool) or not (float(temperature) > 0):  # also rejects NaN
            msg = f"temperature must be 'auto' or a positive number, got {temperature!r}"
            raise ValueError(msg)
        if linkage not in _LINKAGES:
            msg = f"linkage must be one of {_LINKAGES}, got {linkage!r}"
            raise ValueError(msg)
        self.n_clusters = int(n_clusters)
        self.temperature = temperature
        self.linkage = linkage
        self.normalize = normalize

    def resolve_temperature(self, patch_scores: PatchScores) -> float:
        """The ``tau`` used for a set of patch scores.

        Args:
            patch_scores: Patch scores, an ``(N, P)`` array or a sequence of ``(P_i,)`` arrays.

        Returns:
            float: The fixed temperature, or for ``"auto"`` the std of all scores (``inf`` when
            that std is 0, i.e. mean pooling).
        """
        if self.temperature != "auto":
            return float(self.temperature)
        tau = auto_temperature(patch_scores)
        return tau if tau > 0 else math.inf

    def embed(self, patch_features: PatchFeatures, patch_scores: PatchScores) -> np.ndarray:
        """Pool every image's patch features with softmax(score / tau) weights.

        Args:
            patch_features: An ``(N, P, C)`` array or a sequence of ``(P_i, C)`` arrays.
            patch_scores: An ``(N, P)`` array or a sequence of ``(P_i,)`` arrays, aligned with the
                patches.

        Returns:
            np.ndarray: ``float64`` embeddings of shape ``(N, C)``, L2-normalised when ``normalize``.

        Raises:
            ValueError: If the inputs are empty, misaligned, of the wrong shape or not finite.
        """
        return self._embed(patch_features, patch_scores)[0]

    def _embed(self, patch_features: PatchFeatures, patch_scores: PatchScores) -> tuple[np.ndarray, float]:
        features, scores = _check_bags(patch_features, patch_scores)
        tau = self.resolve_temperature(scores)
        embeddings = np.stack([_softmax(s, tau) @ z for z, s in zip(features, scores, strict=True)])
        if self.normalize:
            embeddings = l2_normalize(embeddings)
        return embeddings, tau

    def fit(self, patch_features: PatchFeatures, patch_scores: PatchScores) -> AnomalyClustering:
        """Embed the images and cluster the embeddings.

        Args:
            patch_features: An ``(N, P, C)`` array or a sequence of ``(P_i, C)`` arrays.
            patch_scores: An ``(N, P)`` array or a sequence of ``(P_i,)`` arrays.

        Returns:
            AnomalyClustering: ``self``, with the fitted attributes set.

        Raises:
            ValueError: If the inputs are invalid or there are fewer images than ``n_clusters``.
        """
        embeddings, tau = self._embed(patch_features, patch_scores)
        if self.n_clusters > len(embeddings):
            msg = f"n_clusters={self.n_clusters} is larger than the number of images ({len(embeddings)})"
            raise ValueError(msg)
        if len(embeddings) == 1:  # sklearn needs two samples; one image is trivially one cluster
            labels = np.zeros(1, dtype=np.int64)
        else:
            clustering = AgglomerativeClustering(n_clusters=self.n_clusters, linkage=self.linkage)
            labels = clustering.fit_predict(embeddings).astype(np.int64)
        self.temperature_ = tau
        self.embeddings_ = embeddings
        self.labels_ = labels
        self.n_features_in_ = embeddings.shape[1]
        return self

    def fit_predict(self, patch_features: PatchFeatures, patch_scores: PatchScores) -> np.ndarray:
        """Embed and cluster the images, returning their cluster labels.

        Args:
            patch_features: An ``(N, P, C)`` array or a sequence of ``(P_i, C)`` arrays.
            patch_scores: An ``(N, P)`` array or a sequence of ``(P_i,)`` arrays.

        Returns:
            np.ndarray: ``int64`` cluster labels of shape ``(N,)``.
        """
        return self.fit(patch_features, patch_scores).labels_


def _check_bags(patch_features: PatchFeatures, patch_scores: PatchScores) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate the bags and return them as per-image ``float64`` arrays."""
    if isinstance(patch_features, np.ndarray) and patch_features.ndim != 3:
        msg = (
            f"patch_features must be an (N, P, C) array or a list of (P_i, C) arrays, got shape {patch_features.shape}"
        )
        raise ValueError(msg)
    if isinstance(patch_scores, np.ndarray) and patch_scores.ndim != 2:
        msg = f"patch_scores must be an (N, P) array or a list of (P_i,) arrays, got shape {patch_scores.shape}"
        raise ValueError(msg)
    features = [np.asarray(bag, dtype=np.float64) for bag in patch_features]
    scores = [np.asarray(bag, dtype=np.float64) for bag in patch_scores]
    if not features:
        msg = "no images given: patch_features is empty"
        raise ValueError(msg)
    if len(features) != len(scores):
        msg = f"patch_features has {len(features)} images but patch_scores has {len(scores)}"
        raise ValueError(msg)
    n_channels = features[0].shape[-1] if features[0].ndim == 2 else None
    for index, (z, s) in enumerate(zip(features, scores, strict=True)):
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            msg = f"image {index}: patch features must have shape (P, C) with P, C >= 1, got {z.shape}"
            raise ValueError(msg)
        if z.shape[1] != n_channels:
            msg = f"image {index}: patch features have {z.shape[1]} channels, image 0 has {n_channels}"
            raise ValueError(msg)
        if s.shape != (z.shape[0],):
            msg = f"image {index}: patch scores must have shape ({z.shape[0]},) to match its patches, got {s.shape}"
            raise ValueError(msg)
        if not np.isfinite(z).all():
            msg = f"image {index}: patch features contain NaN or inf"
            raise ValueError(msg)
        if not np.isfinite(s).all():
            msg = f"image {index}: patch scores contain NaN or inf"
            raise ValueError(msg)
    return features, scores
