"""Estimate how many classes to discover: model selection over candidate counts on the region features.

AnomalyNCD needs the number of novel classes in advance. Here every candidate count ``k`` in
``[k_min, k_max]`` clusters the L2-normalised region features with spherical k-means (k-means on the
unit sphere, the geometry of the model's cosine prototypes), and the mean cosine silhouette of the
clustering scores it: how much closer each region is to its own cluster than to the nearest other
one. The count with the highest silhouette wins; on a tie the smaller count (fewer classes is the
simpler explanation). The normal class counts as one of the classes, like ``n_novel_classes``.

The scores of all candidates are kept as evidence for the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score


@dataclass(frozen=True)
class ClassCountSettings:
    """How the number of classes is estimated.

    Attributes:
        k_min: smallest candidate count (normal + at least one defect kind: 2).
        k_max: largest candidate count.
        max_samples: regions used for the silhouette (a seeded sample beyond this; it costs O(n^2)).
        n_init: k-means restarts per candidate.
    """

    k_min: int = 2
    k_max: int = 10
    max_samples: int = 3000
    n_init: int = 10

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            msg = f"need 2 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}"
            raise ValueError(msg)


@dataclass
class ClassCountEstimate:
    """The estimated number of classes with its evidence.

    Attributes:
        n_classes: the chosen count (normal included).
        candidates: the counts tried.
        scores: the silhouette of each candidate.
        criterion: the score's name.
    """

    n_classes: int
    candidates: list[int]
    scores: list[float]
    criterion: str = "cosine silhouette of spherical k-means"

    def as_dict(self) -> dict[str, object]:
        """The estimate as JSON-ready data.

        Returns:
            Its fields.
        """
        return asdict(self)


def estimate_class_count(
    features: np.ndarray, settings: ClassCountSettings | None = None, seed: int = 0
) -> ClassCountEstimate:
    """Pick the number of classes whose clustering of the features is the most separated.

    Args:
        features: ``(R, D)`` region features.
        settings: the candidate range and costs.
        seed: seed of k-means and of the silhouette sample.

    Returns:
        The estimate.

    Raises:
        ValueError: when there are fewer regions than the smallest candidate count + 1.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> centres = np.eye(8)[:4] * 5
        >>> features = np.concatenate([c + rng.normal(size=(30, 8)) for c in centres])
        >>> estimate_class_count(features, ClassCountSettings(k_max=7)).n_classes
        4
    """
    settings = settings or ClassCountSettings()
    points = np.asarray(features, dtype=np.float64)
    points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    if len(points) <= settings.k_min:
        msg = f"{len(points)} regions cannot tell between {settings.k_min} or more classes"
        raise ValueError(msg)
    candidates = list(range(settings.k_min, min(settings.k_max, len(points) - 1) + 1))
    sample = min(settings.max_samples, len(points))
    scores = []
    for k in candidates:
        labels = KMeans(k, n_init=settings.n_init, random_state=seed).fit_predict(points)
        if len(np.unique(labels)) < 2:
            scores.append(-1.0)
            continue
        scores.append(float(silhouette_score(points, labels, metric="cosine", sample_size=sample, random_state=seed)))
    best = int(np.argmax(scores))  # argmax takes the first maximum: the smaller count on a tie
    return ClassCountEstimate(n_classes=candidates[best], candidates=candidates, scores=scores)
