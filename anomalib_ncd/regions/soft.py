"""The soft path: a region for an image where MEBin found nothing, centred on the map's evidence.

MEBin is a hard decision: a stable region, or nothing. With an unsure detector a real defect often
gives no stable region, and "nothing" used to mean "normal", so the detector's evidence for that
image was thrown away. The soft path keeps it: the image's strongest evidence becomes a region that
the discovery model classifies like any other, and the normal decision is taken from the detector's
score and the model together (:func:`soft_path_probabilities`).

Where the evidence is. The map's peak may be one hot pixel; its *blob* is the connected set of
pixels around the peak at half its height above the image's own background level (the median of
its map): a full-width-at-half-maximum rule, the usual principle for the extent of a peak, with no
threshold fitted to any labeled set. The blob's box is cut like a MEBin region
(:func:`~anomalib_ncd.regions.crops.crop_boxes`), its binary mask guides the attention as a MEBin
mask would, and the map inside the crop is its soft mask.

The normal decision. A soft region's score ``s`` is the image's peak on MEBin's range (0 for the
weakest peak of the set, 1 for the strongest), the quantity AnomalyNCD's pseudo-label correction
(PLC) already reads as the detector's confidence. The same rule decides at inference:
``p' = w * onehot(normal) + (1 - w) * p`` with ``w = max(0, 0.5 - s)``. An image whose peak is as
weak as the set's weakest gets ``w = 0.5`` and is normal whatever the model says; from ``s = 0.5``
on the model alone decides. The rule is the papers' own, used in training and at decision alike.
"""

from __future__ import annotations

import cv2
import numpy as np

NOTHING_FOUND = ("soft", "normal")


def peak_blob(anomaly_map: np.ndarray) -> np.ndarray:
    """The connected blob around a map's maximum, at half its height above the map's median.

    Args:
        anomaly_map: ``(H, W)`` anomaly map (any scale).

    Returns:
        ``(H, W)`` bool mask; empty when the map is flat (no peak above its background).

    Example:
        >>> m = np.zeros((5, 5), np.float32); m[1, 1] = 1.0; m[1, 2] = 0.6; m[3, 3] = 0.9
        >>> peak_blob(m).nonzero()
        (array([1, 1]), array([1, 2]))
    """
    values = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak, background = float(values.max()), float(np.median(values))
    if not peak > background:
        return np.zeros(values.shape, dtype=bool)
    above = (values >= background + 0.5 * (peak - background)).astype(np.uint8)
    _, labels = cv2.connectedComponents(above, connectivity=8)
    peak_y, peak_x = np.unravel_index(int(values.argmax()), values.shape)
    return labels == labels[peak_y, peak_x]


def normal_weight(score: float | np.ndarray) -> np.ndarray:
    """PLC's weight of the normal class for a region of anomaly score ``s``: ``max(0, 0.5 - s)``.

    Args:
        score: region score(s) on MEBin's range, in ``[0, 1]``.

    Returns:
        The weight(s), in ``[0, 0.5]``.
    """
    return np.clip(0.5 - np.asarray(score, dtype=np.float64), 0.0, 0.5)


def soft_path_probabilities(
    probabilities: np.ndarray, scores: np.ndarray, soft: np.ndarray, normal_index: int | None
) -> np.ndarray:
    """Class probabilities of soft-path regions corrected toward normal by their detector score.

    Args:
        probabilities: ``(R, K)`` the model's class probabilities of every region.
        scores: ``(R,)`` region scores on MEBin's range.
        soft: ``(R,)`` True for soft-path regions (the only ones changed).
        normal_index: the normal class (``None``: no normal class, nothing changes).

    Returns:
        ``(R, K)`` probabilities (a copy).

    Example:
        >>> p = np.array([[0.2, 0.8], [0.2, 0.8]])
        >>> soft_path_probabilities(p, np.array([0.0, 0.0]), np.array([True, False]), 0).round(2)
        array([[0.6, 0.4],
               [0.2, 0.8]])
    """
    corrected = np.array(probabilities, dtype=np.float64, copy=True)
    soft = np.asarray(soft, dtype=bool)
    if normal_index is None or not soft.any():
        return corrected.astype(probabilities.dtype, copy=False)
    weight = normal_weight(np.asarray(scores)[soft])[:, None]
    target = np.zeros(corrected.shape[1])
    target[normal_index] = 1.0
    corrected[soft] = weight * target + (1.0 - weight) * corrected[soft]
    return corrected.astype(probabilities.dtype, copy=False)
