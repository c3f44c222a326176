"""A training-free foreground prior: the object is what differs from the image border.

Principle (industrial inspection images: an object on a plain background, or a surface that fills the
frame):

1. Work at a reduced resolution (longest side :attr:`ForegroundParameters.working_size`), on CIE Lab
   for colour images and on grey levels otherwise, lightly blurred against sensor noise.
2. Model the background from a band along the image border: its per-channel median colour and the
   robust spread (1.4826 x the median distance of the band's pixels to that colour, floored at a
   couple of grey levels).
3. Score every pixel by its distance to the background colour in units of that spread, and mark as
   object the pixels above Otsu's threshold of the scores, and never below
   :attr:`ForegroundParameters.min_score` spreads (background noise is not an object).
4. Clean the mask: an opening removes specks, a closing bridges small gaps, components much smaller
   than the largest are dropped and holes are filled (a bottle seen from above is a disc).
5. Degrade to the whole image when the result is not an object on a background: nothing found,
   a large part of the border band marked as object (the border is not homogeneous: a texture or a
   surface filling the frame), an object too small to be one, or one that covers nearly everything.

The thresholds are set by principle (noise units, fractions of the frame), not fitted to any
dataset's labels. The prior is deterministic: same pixels, same mask.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from anomalib_ncd.priors.base import ObjectPrior, PriorMask, check_image, whole_mask

#: fallback reasons of the foreground prior (each gives the whole image)
NO_OBJECT = "no_object"
TEXTURED_BORDER = "textured_border"
OBJECT_TOO_SMALL = "object_too_small"
OBJECT_COVERS_IMAGE = "object_covers_image"
IMAGE_TOO_SMALL = "image_too_small"
LOW_CONTRAST = "low_contrast"

_MAD_TO_SIGMA = 1.4826  # median absolute deviation of a normal distribution, in standard deviations


@dataclass(frozen=True)
class ForegroundParameters:
    """Parameters of :class:`ForegroundPrior` (lengths as fractions of the working image's short side).

    Attributes:
        working_size: longest side of the working image in pixels (larger images are shrunk).
        border_fraction: width of the border band that models the background.
        blur_sigma: Gaussian blur before scoring, in working pixels.
        min_score: lowest object threshold, in background spreads.
        noise_floor: lowest background spread, in grey levels (a perfectly flat background).
        max_background_spread: largest spread of a plain background, in grey levels (Lab units for
            colour); a border band that varies more is a texture or a surface: whole image.
        min_object_contrast: smallest median score of the object's pixels, in background spreads;
            less means the "object" is only the tail of the background's variation: whole image.
        max_border_on_object: largest fraction of the border band that may lie on the object; more
            means the border is no background (a texture): whole image.
        max_border_crossings: most places where the object may cross the image's outer edge (a
            part seen whole crosses it nowhere, a cable or a strip in two or four places); more
            means a pattern repeating across the frame (brick mortar, weave): whole image.
        min_object_fraction: smallest object, as a fraction of the image; less: whole image.
        max_object_fraction: largest object, as a fraction of the image; more: whole image.
        min_component_fraction: components smaller than this fraction of the largest one are dropped.
        open_fraction: radius of the opening that removes specks.
        close_fraction: radius of the closing that bridges gaps.
    """

    working_size: int = 256
    border_fraction: float = 0.04
    blur_sigma: float = 1.0
    min_score: float = 3.0
    noise_floor: float = 2.0
    max_background_spread: float = 8.0
    min_object_contrast: float = 6.0
    max_border_on_object: float = 0.3
    max_border_crossings: int = 4
    min_object_fraction: float = 0.005
    max_object_fraction: float = 0.95
    min_component_fraction: float = 0.1
    open_fraction: float = 0.01
    close_fraction: float = 0.02

    def __post_init__(self) -> None:
        """Check the ranges.

        Raises:
            ValueError: naming the invalid parameter.
        """
        if self.working_size < 16:
            msg = f"foreground working_size must be at least 16 pixels, got {self.working_size}"
            raise ValueError(msg)
        for name in ("border_fraction", "open_fraction", "close_fraction"):
            if not 0 <= getattr(self, name) < 0.5:
                msg = f"foreground {name} must lie in [0, 0.5), got {getattr(self, name)}"
                raise ValueError(msg)
        for name in ("max_border_on_object", "min_object_fraction", "max_object_fraction", "min_component_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                msg = f"foreground {name} must lie in [0, 1], got {getattr(self, name)}"
                raise ValueError(msg)
        if self.min_object_fraction >= self.max_object_fraction:
            msg = "foreground min_object_fraction must be below max_object_fraction"
            raise ValueError(msg)
        if min(self.blur_sigma, self.min_score, self.min_object_contrast) < 0 or self.noise_floor <= 0:
            msg = "foreground blur_sigma, min_score and min_object_contrast must be >= 0, noise_floor > 0"
            raise ValueError(msg)


class ForegroundPrior(ObjectPrior):
    """Object = pixels far from the colour of the image border; the whole image for textures.

    See the module docstring for the principle. Cheap (a few milliseconds per image), so it is not
    cached on disk.

    Args:
        parameters: the algorithm's parameters (defaults by principle).
    """

    name = "foreground"

    def __init__(self, parameters: ForegroundParameters | None = None) -> None:
        super().__init__()
        self.parameters = parameters or ForegroundParameters()

    def fingerprint(self) -> str:
        """``foreground`` with its parameters.

        Returns:
            ``foreground:v1:`` followed by the parameters as JSON.
        """
        return "foreground:v1:" + json.dumps(asdict(self.parameters), sort_keys=True)

    def compute(self, image: np.ndarray, path: str | Path | None = None) -> PriorMask:
        """Segment the object of one image, or give the whole image (see the module docstring).

        Args:
            image: ``uint8`` ``(H, W)`` or ``(H, W, 3)``.
            path: the image's file, for log messages.

        Returns:
            The mask; ``fallback`` names why the whole image was used, if it was.
        """
        pixels = check_image(image)
        height, width = pixels.shape[:2]
        small, reason = self.segment_small(pixels)
        if reason is not None:
            self.record_fallback(reason, path)
            return PriorMask(whole_mask(pixels), reason)
        if small.shape != (height, width):
            smooth = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            return PriorMask(smooth > 0.5)
        return PriorMask(small)

    def segment_small(self, image: np.ndarray) -> tuple[np.ndarray, str | None]:
        """The object mask at the working resolution, or why there is none.

        Args:
            image: checked ``uint8`` ``(H, W)`` or ``(H, W, 3)`` pixels.

        Returns:
            The working-resolution mask and ``None``, or an empty array and the fallback reason.
        """
        p = self.parameters
        features = _working_features(image, p.working_size, p.blur_sigma)
        rows, cols = features.shape[:2]
        short = min(rows, cols)
        band = max(1, round(p.border_fraction * short))
        if short < 2 * band + 4:
            return np.zeros((0, 0), dtype=bool), IMAGE_TOO_SMALL
        border = np.ones((rows, cols), dtype=bool)
        border[band:-band, band:-band] = False

        background = np.median(features[border], axis=0)
        distance = np.sqrt(np.sum((features - background) ** 2, axis=2))
        spread = max(_MAD_TO_SIGMA * float(np.median(distance[border])), p.noise_floor)
        if spread > p.max_background_spread:
            return np.zeros((0, 0), dtype=bool), TEXTURED_BORDER
        score = distance / spread
        threshold = p.min_score
        if float(score.max()) > float(score.min()):
            threshold = max(threshold, float(threshold_otsu(score, nbins=256)))
        found = _clean(score > threshold, short, p)
        area = float(found.mean())
        if not found.any():
            return found, NO_OBJECT
        if float(found[border].mean()) > p.max_border_on_object or edge_crossings(found) > p.max_border_crossings:
            return found, TEXTURED_BORDER
        if area < p.min_object_fraction:
            return found, OBJECT_TOO_SMALL
        if area > p.max_object_fraction:
            return found, OBJECT_COVERS_IMAGE
        if float(np.median(score[found])) < p.min_object_contrast:
            return found, LOW_CONTRAST
        return found, None


def edge_crossings(mask: np.ndarray) -> int:
    """How many separate runs of the mask lie along the image's outer edge (walked once around).

    Args:
        mask: ``(H, W)`` bool mask.

    Returns:
        The number of runs (0 when the mask does not reach the edge).

    Example:
        >>> mask = np.zeros((6, 6), bool)
        >>> mask[:, 2] = True  # a vertical line crosses the top and the bottom edge
        >>> edge_crossings(mask)
        2
    """
    ring = np.concatenate([mask[0, :], mask[1:, -1], mask[-1, -2::-1], mask[-2:0:-1, 0]]).astype(np.int8)
    if ring.all():
        return 1
    starts = np.diff(np.concatenate([ring[-1:], ring])) == 1  # circular: a run may wrap around
    return int(starts.sum())


def _working_features(image: np.ndarray, working_size: int, blur_sigma: float) -> np.ndarray:
    """The image shrunk to ``working_size``, as float Lab (colour) or grey, blurred; ``(h, w, C)``."""
    height, width = image.shape[:2]
    factor = min(1.0, working_size / max(height, width))
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    grey = image.ndim == 2 or (
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )
    features: np.ndarray
    if not grey:
        features = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    else:  # grey, or a grey image stored as RGB: grey levels (Lab's L would rescale them)
        features = (image if image.ndim == 2 else image[..., 0]).astype(np.float32)[:, :, None]
    if blur_sigma > 0:
        blurred = cv2.GaussianBlur(features, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
        features = blurred.reshape(features.shape)
    return features


def _disc(radius: int) -> np.ndarray:
    """An elliptical structuring element of the given radius."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _clean(found: np.ndarray, short: int, p: ForegroundParameters) -> np.ndarray:
    """Open, close, drop small components and fill holes."""
    mask: np.ndarray = found.astype(np.uint8)
    open_radius = round(p.open_fraction * short)
    if open_radius > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(open_radius))
    close_radius = round(p.close_fraction * short)
    if close_radius > 0:
        # pad so that the closing does not glue the object to the image edge
        padded = cv2.copyMakeBorder(mask, close_radius, close_radius, close_radius, close_radius, cv2.BORDER_CONSTANT)
        padded = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _disc(close_radius))
        mask = padded[close_radius:-close_radius, close_radius:-close_radius]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros(found.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= p.min_component_fraction * areas.max()) + 1
    kept = np.isin(labels, keep)
    return _fill_holes(kept)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background components that do not touch the image edge."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    if count <= 1:
        return mask
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    holes = ~np.isin(labels, edge) & ~mask
    return mask | holes
