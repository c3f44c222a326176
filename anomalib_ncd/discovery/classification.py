"""The classes of a set of images and of their regions, as the discovery model assigns them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalib_ncd.regions.crops import Region


@dataclass
class ImageClassification:
    """Image and region classes of images classified together.

    Attributes:
        classes: ``(I,)`` class index of each image.
        confidence: ``(I,)`` fused probability of that class.
        probabilities: ``(I, K)`` area-weighted fused class probabilities.
        regions: every region, grouped by image (``region.image_index`` is the image's position).
        region_probabilities: ``(R, K)`` class probabilities of each region.
        region_features: ``(R, D)`` the regions' CLS features (for embeddings in reports).
    """

    classes: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray
    regions: list[Region]
    region_probabilities: np.ndarray
    region_features: np.ndarray

    @property
    def region_classes(self) -> np.ndarray:
        """``(R,)`` class index of each region."""
        return self.region_probabilities.argmax(1)

    @property
    def region_confidence(self) -> np.ndarray:
        """``(R,)`` probability of each region's class."""
        return self.region_probabilities.max(1)

    def rows_of_image(self, image_index: int) -> np.ndarray:
        """Indices of the regions of one image.

        Args:
            image_index: the image's position.

        Returns:
            Region indices into :attr:`regions`.
        """
        return np.flatnonzero(np.array([region.image_index for region in self.regions]) == image_index)
