# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""K-means on frozen image or region features, the simplest defect-discovery baseline.

Features from a frozen CNN or ViT are compared by direction rather than length, so rows are
L2-normalised by default: on unit vectors the squared Euclidean distance is ``2 - 2 cos``, and
k-means then groups by cosine similarity ("spherical" k-means up to the centroid norm).

Example:
    >>> import numpy as np
    >>> features = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    >>> KMeansBaseline(n_clusters=2).fit_predict(features).tolist()
    [1, 1, 0, 0]
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["KMeansBaseline", "l2_normalize"]


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Scale every row to unit Euclidean norm; all-zero rows stay zero.

    Args:
        features: Array of shape ``(N, C)``.

    Returns:
        np.ndarray: ``float64`` array of shape ``(N, C)``.

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6, 0.8], [0.0, 0.0]]
    """
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    # A zero row has no direction; dividing by 1 keeps it at the origin instead of producing NaN.
    return features / np.where(norms > 0, norms, 1.0)


def _check_n_clusters(n_clusters: int) -> None:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer) or n_clusters < 1:
        msg = f"n_clusters must be a positive integer, got {n_clusters!r}"
        raise ValueError(msg)


def _check_features(features: np.ndarray, n_clusters: int) -> np.ndarray:
    """Validate a ``(N, C)`` feature matrix for clustering into ``n_clusters`` groups."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        msg = f"features must have shape (N, C), got shape {features.shape}"
        raise ValueError(msg)
    if features.shape[1] == 0:
        msg = "features have no columns (C = 0)"
        raise ValueError(msg)
    if not np.isfinite(features).all():
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        msg = f"features contain NaN or inf values (rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''})"
        raise ValueError(msg)
    if n_clusters > features.shape[0]:
        msg = f"n_clusters={n_clusters} is larger than the number of samples ({features.shape[0]})"
        raise ValueError(msg)
    return features


class KMeansBaseline:
    """K-means clustering of feature vectors, L2-normalised by default (cosine geometry).

    Args:
        n_clusters: Number of clusters (expected defect classes).
        normalize: Whether to L2-normalise every feature row before clustering.
        n_init: Number of k-means++ restarts; the run with the lowest inertia is kept.
        seed: Random state of :class:`sklearn.cluster.KMeans`, for reproducible results.

    Attributes:
        labels_: Cluster of every sample, shape ``(N,)``, after :meth:`fit`.
        cluster_centers_: Centroids in the clustered space (normalised features when
            ``normalize``), shape ``(n_clusters, C)``.
        inertia_: Sum of squared distances of the samples to their centroid.
        n_features_in_: Number of feature columns seen in :meth:`fit`.
    """

    def __init__(self, n_clusters: int, normalize: bool = True, n_init: int = 10, seed: int = 0) -> None:
        _check_n_clusters(n_clusters)
        if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer) or n_init < 1:
            msg = f"n_init must be a positive integer, got {n_init!r}"
            raise ValueError(msg)
        self.n_clusters = int(n_clusters)
        self.normalize = normalize
        self.n_init = int(n_init)
        self.seed = seed

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        features = _check_features(features, self.n_clusters)
        return l2_normalize(features) if self.normalize else features

    def fit(self, features: np.ndarray) -> KMeansBaseline:
        """Cluster the feature rows.

        Args:
            features: Array of shape ``(N, C)``, finite, with ``N >= n_clusters``.

        Returns:
            KMeansBaseline: ``self``, with the fitted attributes set.

        Raises:
            ValueError: If ``features`` is not 2-D, contains NaN or inf, or has fewer rows than
                ``n_clusters``.
        """
        prepared = self._prepare(features)
        kmeans = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed)
        self.labels_ = kmeans.fit_predict(prepared).astype(np.int64)
        self.cluster_centers_ = kmeans.cluster_centers_
        self.inertia_ = float(kmeans.inertia_)
        self.n_features_in_ = prepared.shape[1]
        self.kmeans_ = kmeans
        return self

    def fit_predict(self, features: np.ndarray) -> np.ndarray:
        """Cluster the feature rows and return their labels.

        Args:
            features: Array of shape ``(N, C)``.

        Returns:
            np.ndarray: ``int64`` cluster labels of shape ``(N,)``.
        """
        return self.fit(features).labels_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Assign new feature rows to the nearest fitted centroid.

        Args:
            features: Array of shape ``(M, C)`` with the ``C`` seen in :meth:`fit`.

        Returns:
            np.ndarray: ``int64`` cluster labels of shape ``(M,)``.

        Raises:
            RuntimeError: If the estimator has not been fitted.
            ValueError: If the features are invalid or have a different number of columns.
        """
        if not hasattr(self, "kmeans_"):
            msg = "KMeansBaseline is not fitted yet; call fit() first"
            raise RuntimeError(msg)
        prepared = _check_features(features, 0)
        if prepared.shape[1] != self.n_features_in_:
            msg = f"features have {prepared.shape[1]} columns, the model was fitted on {self.n_features_in_}"
            raise ValueError(msg)
        if self.normalize:
            prepared = l2_normalize(prepared)
        return self.kmeans_.predict(prepared).astype(np.int64)
