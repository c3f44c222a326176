"""The classes of a set of images and of their regions, as the discovery model assigns them.

One type for every way a set gets classified: the training set (:meth:`~anomalib_ncd.AnomalyNCD.discover`,
``DefectDiscovery.classification_``), new images (``classify_images``, ``DefectDiscovery.classify``)
and a continual batch; the tables and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anomalib_ncd.regions.crops import Region


@dataclass
class ImageClassification:
    """Image and region classes of images classified together.

    Attributes:
        classes: ``(I,)`` class index of each image.
        confidence: ``(I,)`` fused probability of that class.
        probabilities: ``(I, K)`` area-weighted fused class probabilities.
        regions: every region, grouped by image (``region.image_index`` is the image's position);
            empty from :meth:`~anomalib_ncd.AnomalyNCD.discover` when it was not given them (the
            model keeps their views, not the regions).
        region_probabilities: ``(R, K)`` class probabilities of each region.
        region_features: ``(R, D)`` the regions' CLS features (for embeddings in reports).
        region_descriptors: ``(R, C)`` the regions' anomaly-pooled frozen descriptors (the ``"knn"``
            unknown score's space), when computed.
        region_unknown_score: ``(R,)`` unknown score of each region (higher: fits the classes less;
            ``NaN`` for whole-image regions), see :mod:`~anomalib_ncd.discovery.novelty`.
        region_is_unknown: ``(R,)`` whether each region fits no class (its class stays the nearest).
        unknown_score: ``(I,)`` fused unknown score of each image (``NaN`` where nothing was found).
        is_unknown: ``(I,)`` whether each image fits no class (its class stays the nearest).

    The unknown fields are ``None`` for classifications made without rejection; the ``*_or_default``
    accessors then give ``NaN`` scores and ``False`` decisions.
    """

    classes: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray
    region_probabilities: np.ndarray
    region_features: np.ndarray
    regions: list[Region] = field(default_factory=list)
    region_descriptors: np.ndarray | None = None
    region_unknown_score: np.ndarray | None = None
    region_is_unknown: np.ndarray | None = None
    unknown_score: np.ndarray | None = None
    is_unknown: np.ndarray | None = None

    @property
    def region_classes(self) -> np.ndarray:
        """``(R,)`` class index of each region."""
        return self.region_probabilities.argmax(1)

    @property
    def region_confidence(self) -> np.ndarray:
        """``(R,)`` probability of each region's class."""
        return self.region_probabilities.max(1)

    def unknown_or_default(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The unknown fields, with ``NaN`` scores and ``False`` decisions where they are missing.

        Returns:
            ``(region scores, region decisions, image scores, image decisions)``.
        """
        n_regions, n_images = len(self.region_probabilities), len(self.classes)
        return (
            _or(self.region_unknown_score, np.full(n_regions, np.nan, dtype=np.float32)),
            _or(self.region_is_unknown, np.zeros(n_regions, dtype=bool)),
            _or(self.unknown_score, np.full(n_images, np.nan, dtype=np.float32)),
            _or(self.is_unknown, np.zeros(n_images, dtype=bool)),
        )

    def rows_of_image(self, image_index: int) -> np.ndarray:
        """Indices of the regions of one image.

        Args:
            image_index: the image's position.

        Returns:
            Region indices into :attr:`regions`.
        """
        return np.flatnonzero(np.array([region.image_index for region in self.regions]) == image_index)


def _or(values: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    return default if values is None else values
