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

The normal decision. The detector's own evidence says how likely the image is anomalous: its peak
(the maximum of its map) against the peaks of the whole set. A two-component Gaussian mixture on the
set's peaks (:class:`PeakCalibration`, fitted with the set like MEBin's range, no label) separates
the normal-looking peaks from the anomalous-looking ones, and its posterior ``p_a`` of the higher
component is the detector's probability that the image is anomalous. The soft region's class
probabilities are then ``p' = (1 - p_a) * onehot(normal) + p_a * p``: with a sure detector the
components separate and a normal image stays normal whatever the model says; with an unsure one
``p_a`` is moderate and the model's own view of the crop decides. Soft regions train like any other
(AnomalyNCD's pseudo-label correction pulls the weak ones toward normal). Without a calibration
(a checkpoint from before it existed) the correction is PLC's: ``w = max(0, 0.5 - s)`` toward normal,
``s`` the region's score on MEBin's range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

NOTHING_FOUND = ("soft", "normal")


@dataclass(frozen=True)
class PeakCalibration:
    """A two-component 1-D Gaussian mixture on a set's image peaks: ``P(anomalous | peak)``.

    Attributes:
        weights: the two components' weights, normal-looking (lower mean) first.
        means: their means.
        variances: their variances.
    """

    weights: tuple[float, float]
    means: tuple[float, float]
    variances: tuple[float, float]

    @classmethod
    def fit(cls, peaks: np.ndarray, seed: int = 0) -> PeakCalibration:
        """Fit the mixture on the peaks of a set (EM, scikit-learn; deterministic with the seed).

        Args:
            peaks: ``(I,)`` each image's peak anomaly score (finite values are used).
            seed: the initialisation's seed.

        Returns:
            The calibration; for fewer than 2 distinct finite peaks, a degenerate one under which
            every image is as likely anomalous as not (``p_a = 0.5``).
        """
        from sklearn.mixture import GaussianMixture

        values = np.asarray(peaks, dtype=np.float64)
        values = values[np.isfinite(values)]
        if np.unique(values).size < 2:
            centre = float(values.mean()) if values.size else 0.0
            return cls((0.5, 0.5), (centre, centre), (1.0, 1.0))
        mixture = GaussianMixture(n_components=2, covariance_type="full", random_state=seed, reg_covar=1e-6)
        mixture.fit(values[:, None])
        order = np.argsort(mixture.means_[:, 0])
        return cls(
            weights=tuple(float(mixture.weights_[i]) for i in order),  # type: ignore[arg-type]
            means=tuple(float(mixture.means_[i, 0]) for i in order),  # type: ignore[arg-type]
            variances=tuple(float(mixture.covariances_[i, 0, 0]) for i in order),  # type: ignore[arg-type]
        )

    def anomalous_probability(self, peaks: np.ndarray | float) -> np.ndarray:
        """The posterior of the higher (anomalous-looking) component for each peak.

        Peaks above the anomalous component's mean are anomalous with the probability at that mean or
        more, and below the normal one's mean normal likewise (a Gaussian tail must not flip sides).

        Args:
            peaks: peak score(s).

        Returns:
            Probabilities in ``[0, 1]``, same shape as ``peaks``.

        Example:
            >>> calibration = PeakCalibration((0.5, 0.5), (0.0, 10.0), (1.0, 1.0))
            >>> calibration.anomalous_probability(np.array([-5.0, 5.0, 20.0])).round(3)
            array([0. , 0.5, 1. ])
        """
        values = np.asarray(peaks, dtype=np.float64)
        clipped = np.clip(values, self.means[0], self.means[1]) if self.means[1] > self.means[0] else values
        log_densities = [
            np.log(max(weight, 1e-300)) - 0.5 * np.log(2 * np.pi * variance) - 0.5 * (clipped - mean) ** 2 / variance
            for weight, mean, variance in zip(self.weights, self.means, self.variances, strict=True)
        ]
        return 1.0 / (1.0 + np.exp(np.clip(log_densities[0] - log_densities[1], -700, 700)))

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for a checkpoint.

        Returns:
            The fields as lists.
        """
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeakCalibration:
        """The calibration :meth:`as_dict` wrote.

        Args:
            data: the dict.

        Returns:
            The calibration.
        """
        return cls(*(tuple(float(v) for v in data[key]) for key in ("weights", "means", "variances")))  # type: ignore[arg-type]


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
    probabilities: np.ndarray,
    scores: np.ndarray,
    soft: np.ndarray,
    normal_index: int | None,
    anomalous: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities of soft-path regions corrected toward normal by the detector's evidence.

    Args:
        probabilities: ``(R, K)`` the model's class probabilities of every region.
        scores: ``(R,)`` region scores on MEBin's range (PLC's rule where ``anomalous`` is NaN).
        soft: ``(R,)`` True for soft-path regions (the only ones changed).
        normal_index: the normal class (``None``: no normal class, nothing changes).
        anomalous: ``(R,)`` the detector's calibrated probability that each region's image is
            anomalous (:class:`PeakCalibration`); NaN or ``None`` where unknown.

    Returns:
        ``(R, K)`` probabilities (a copy).

    Example:
        >>> p, soft, evidence = np.full((3, 2), [0.2, 0.8]), np.array([True, True, False]), np.array([0.5, np.nan, 0.5])
        >>> soft_path_probabilities(p, np.zeros(3), soft, 0, evidence).round(2)
        array([[0.6, 0.4],
               [0.6, 0.4],
               [0.2, 0.8]])
    """
    corrected = np.array(probabilities, dtype=np.float64, copy=True)
    soft = np.asarray(soft, dtype=bool)
    if normal_index is None or not soft.any():
        return corrected.astype(probabilities.dtype, copy=False)
    evidence = np.full(len(corrected), np.nan) if anomalous is None else np.asarray(anomalous, dtype=np.float64)
    weight = np.where(np.isnan(evidence), normal_weight(np.asarray(scores)), 1.0 - np.nan_to_num(evidence))
    weight = weight[soft][:, None]
    target = np.zeros(corrected.shape[1])
    target[normal_index] = 1.0
    corrected[soft] = weight * target + (1.0 - weight) * corrected[soft]
    return corrected.astype(probabilities.dtype, copy=False)


def stands_for_no_anomaly(
    whole_image: np.ndarray, soft: np.ndarray | None = None, anomalous: np.ndarray | None = None
) -> np.ndarray:
    """Regions that stand for no anomaly: never unknown, never new-kind, not in the knn bank.

    These are the whole-image regions of images where nothing was found, and the soft-path regions
    whose image the detector's calibrated evidence calls normal (``p_a < 0.5``, or unknown ``p_a``).
    "Unknown" is a verdict on an anomaly; an image the detector calls normal has none.

    Args:
        whole_image: ``(R,)`` whole-image flags.
        soft: ``(R,)`` soft-path flags, or ``None``.
        anomalous: ``(R,)`` the detector's calibrated probability that the region's image is
            anomalous (NaN where unknown), or ``None``.

    Returns:
        ``(R,)`` bool.

    Example:
        >>> whole, soft = np.array([1, 0, 0, 0], bool), np.array([0, 1, 1, 0], bool)
        >>> stands_for_no_anomaly(whole, soft, np.array([np.nan, 0.9, 0.1, np.nan]))
        array([ True, False,  True, False])
    """
    result = np.asarray(whole_image, dtype=bool).copy()
    if soft is not None:
        evidence = np.full(result.shape, np.nan) if anomalous is None else np.asarray(anomalous, dtype=np.float64)
        result |= np.asarray(soft, dtype=bool) & ~(evidence >= 0.5)
    return result


def regions_without_anomaly(regions: Sequence[Any]) -> np.ndarray:
    """:func:`stands_for_no_anomaly` of region objects (``whole_image``, ``source``, ``anomalous_probability``).

    Args:
        regions: the regions.

    Returns:
        ``(R,)`` bool.
    """
    return stands_for_no_anomaly(
        np.array([bool(region.whole_image) for region in regions], dtype=bool),
        np.array([getattr(region, "source", "region") == "soft" for region in regions], dtype=bool),
        np.array([float(getattr(region, "anomalous_probability", np.nan)) for region in regions], dtype=np.float64),
    )
