"""Region fusion: from per-region class probabilities to one prediction per image.

AnomalyNCD classifies every anomaly-centred region of an image, then merges the regions'
probabilities with area-dependent weights: within one image,
``w_i = softmax_i(sqrt(area_i) / T)`` and ``p_image = sum_i w_i p_i``. Larger defects weigh
more; ``T`` sets how much (the paper uses 100 on MVTec AD and 50 on MTD). ``T -> inf`` gives
the plain mean, ``T -> 0`` keeps only the largest region(s).

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    >>> fused = fuse_regions(probs, areas=[100, 100, 7], image_index=[0, 0, 1], n_images=2)
    >>> fused.round(2).tolist()
    [[0.55, 0.45], [0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

_SHOWN_MISSING = 20


def _as_numpy(values: np.ndarray | Tensor | Sequence, dtype: type) -> np.ndarray:
    """Convert an array, tensor (any device or dtype) or sequence to a numpy array."""
    if hasattr(values, "detach"):  # a torch tensor; avoids importing torch for numpy callers
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=dtype)


def fuse_regions(
    region_probs: np.ndarray | Tensor | Sequence[Sequence[float]],
    areas: np.ndarray | Tensor | Sequence[float],
    image_index: np.ndarray | Tensor | Sequence[int],
    n_images: int,
    temperature: float = 50.0,
) -> np.ndarray:
    """Fuse region probabilities into image probabilities with area-softmax weights.

    Args:
        region_probs: ``(R, K)`` class probabilities of the regions.
        areas: ``(R,)`` region areas in pixels (``>= 0``).
        image_index: ``(R,)`` index of each region's image, in ``[0, n_images)``.
        n_images: Number of images.
        temperature: Softmax temperature ``T > 0`` on ``sqrt(area)`` (``inf`` allowed: plain mean).

    Returns:
        ``(n_images, K)`` float64 fused probabilities.

    Raises:
        ValueError: On inconsistent shapes, invalid values, or images without any region
            (the pipeline always gives every image at least one region, the whole image
            when nothing was found).
    """
    probs = _as_numpy(region_probs, np.float64)
    area = _as_numpy(areas, np.float64)
    index = _as_numpy(image_index, np.float64)
    if probs.ndim != 2 or area.shape != (probs.shape[0],) or index.shape != (probs.shape[0],):
        msg = f"expected region_probs (R, K), areas (R,), image_index (R,); got {probs.shape}, {area.shape}, "
        msg += f"{index.shape}"
        raise ValueError(msg)
    if not temperature > 0:
        msg = f"temperature must be > 0, got {temperature}"
        raise ValueError(msg)
    if not np.all(np.isfinite(area) & (area >= 0)):
        msg = "areas must be finite and >= 0"
        raise ValueError(msg)
    if np.any(index != np.round(index)) or np.any((index < 0) | (index >= n_images)):
        msg = f"image_index must hold integers in [0, {n_images})"
        raise ValueError(msg)
    index = index.astype(np.int64)
    counts = np.bincount(index, minlength=n_images)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        shown = ", ".join(str(i) for i in missing[:_SHOWN_MISSING])
        more = f" and {missing.size - _SHOWN_MISSING} more" if missing.size > _SHOWN_MISSING else ""
        msg = f"{missing.size} image(s) without any region: {shown}{more}"
        raise ValueError(msg)

    root = np.sqrt(area)
    peak = np.full(n_images, -np.inf)
    np.maximum.at(peak, index, root)
    # Subtract each image's peak before dividing: the exponent is <= 0 and exactly 0 for the
    # largest region, so no overflow for any T (a tiny T gives -inf, i.e. weight 0).
    with np.errstate(over="ignore"):
        exponent = (root - peak[index]) / temperature
    weight = np.exp(exponent)
    weight /= np.bincount(index, weights=weight, minlength=n_images)[index]
    fused = np.zeros((n_images, probs.shape[1]))
    np.add.at(fused, index, weight[:, None] * probs)
    return fused


def fuse_predictions(
    region_probs: np.ndarray | Tensor | Sequence[Sequence[float]],
    areas: np.ndarray | Tensor | Sequence[float],
    image_index: np.ndarray | Tensor | Sequence[int],
    n_images: int,
    temperature: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Image labels and confidences from fused region probabilities (see ``fuse_regions``).

    Args:
        region_probs: ``(R, K)`` class probabilities of the regions.
        areas: ``(R,)`` region areas in pixels.
        image_index: ``(R,)`` index of each region's image.
        n_images: Number of images.
        temperature: Softmax temperature on ``sqrt(area)``.

    Returns:
        ``(labels, confidence)``: ``(n_images,)`` int64 argmax of the fused probabilities
        and ``(n_images,)`` float64 maximum fused probability.

    Example:
        >>> labels, confidence = fuse_predictions([[0.9, 0.1], [0.2, 0.8]], [1, 1], [0, 1], n_images=2)
        >>> labels.tolist(), confidence.tolist()
        ([0, 1], [0.9, 0.8])
    """
    fused = fuse_regions(region_probs, areas, image_index, n_images, temperature)
    labels = fused.argmax(axis=1).astype(np.int64)
    return labels, fused[np.arange(n_images), labels]
