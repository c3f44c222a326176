"""Anomaly-centred square regions from a binary anomaly mask (AnomalyNCD's sub-images).

Industrial defects are small and off-centre; a classifier sees them only if the image is cropped
around them. For every external contour of the mask we take its bounding box and a square centred
on it:

* half-side ``max(int(max(h, w) * (1 + padding) / 2), int(min_size * max(H, W)))``, capped at
  ``int(max(H, W) / 2)``: the defect plus some context, never less than ``2 * min_size`` of the
  image;
* shifted to lie inside the image, then clipped to it. Clipping only bites for images whose short
  side is shorter than the square (odd aspect ratios): the region then spans the short side fully
  and the discovery views resize it to a square, instead of reading outside the image.

Squares whose gap (Euclidean distance between the rectangles, 0 when they overlap) is below
``int(merge_distance * max(H, W))`` are merged into their union, made square again by growing the
short side, and placed inside the image; merging repeats until no two regions are close (the
reference merges one level only, so a chain of three close defects could stay split). The largest
regions are kept, at most the anomaly count MEBin estimated (the reference keeps one more: set
``keep_extra=True`` for that behaviour). An empty mask gives the whole image as one region with an
empty mask.

Two ways to size the square (``CropSettings.sizing``):

* ``image`` (the reference): the half-side formula above. Its floor, 20% of the image's long side,
  makes a 30 px defect of a 1024 px image 4% of its view: small defects are diluted by surface.
* ``defect`` (default): the square is sized in units of the defect, side
  ``context * max(h, w)`` (the defect plus half its size of context on each side with the default
  ``context = 2``), never below ``min_pixels`` (a crop smaller than that is only upsampled: no
  detail is gained) and never above the image's long side. A defect then fills the same share of
  its view whatever the image's resolution, and large defects keep context as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
CROP_SIZINGS = ("defect", "image")
REGION_SOURCES = ("region", "soft", "none")


@dataclass(frozen=True)
class CropSettings:
    """Parameters of the anomaly-centred crops (defaults: AnomalyNCD's).

    Attributes:
        padding: context around the defect box, as a fraction of its long side.
        min_size: minimum half-side, as a fraction of the image's long side.
        merge_distance: regions closer than this fraction of the image's long side are merged.
        keep_extra: keep one more region than MEBin's anomaly count (reference off-by-one).
        sizing: ``defect`` (side in units of the defect, see the module docstring) or ``image``
            (the reference's ``padding`` / ``min_size`` rule).
        context: side of the square in units of the defect's long side (``defect`` sizing).
        min_pixels: smallest side of a square in image pixels (``defect`` sizing).
    """

    padding: float = 0.1
    min_size: float = 0.1
    merge_distance: float = 0.01
    keep_extra: bool = False
    sizing: str = "defect"
    context: float = 2.0
    min_pixels: int = 32

    def __post_init__(self) -> None:
        for name in ("padding", "min_size", "merge_distance"):
            if getattr(self, name) < 0:
                msg = f"crop setting {name} must be >= 0, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.sizing not in CROP_SIZINGS:
            msg = f"crop setting sizing must be one of {CROP_SIZINGS}, got {self.sizing!r}"
            raise ValueError(msg)
        if self.context < 1 or self.min_pixels < 1:
            msg = f"crop settings need context >= 1 and min_pixels >= 1, got {self.context}, {self.min_pixels}"
            raise ValueError(msg)
        if self.min_size > 0.5:
            msg = f"crop setting min_size must be <= 0.5 (a half-side), got {self.min_size}"
            raise ValueError(msg)


@dataclass
class Region:
    """One anomaly-centred region of an image.

    Attributes:
        image_index: position of the image in its map set.
        box: ``(x0, y0, x1, y1)`` in image pixels, end exclusive.
        area: anomalous pixels of the binary mask inside the box.
        score: max of the range-normalised anomaly map inside the box, in ``[0, 1]``.
        whole_image: True when nothing was found and the region is the whole image.
        source: how the region was found: ``region`` (a binarised region of the anomaly map, or a
            ground-truth defect), ``soft`` (MEBin found nothing; the region is centred on the map's
            strongest evidence, see :mod:`~anomalib_ncd.regions.soft`) or ``none`` (nothing found,
            the whole image with an empty mask).
        anomalous_probability: for a soft-path region, the detector's calibrated probability that
            its image is anomalous (:class:`~anomalib_ncd.regions.soft.PeakCalibration`); NaN otherwise.
        crop: the image pixels of the box, when loaded.
        mask: the binary mask inside the box (bool), when loaded.
        soft_mask: the anomaly map inside the box on MEBin's normalised scale (``[0, 1]`` floats, the
            crop's size), when loaded: a graded guide for soft attention.
        object_mask: the object prior inside the box (bool, the crop's size), when an object prior
            was used: which pixels belong to the inspected object (the region guidance factor).
    """

    image_index: int
    box: Box
    area: int
    score: float
    whole_image: bool = False
    source: str = "region"
    anomalous_probability: float = float("nan")
    crop: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    soft_mask: np.ndarray | None = field(default=None, repr=False)
    object_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        """Width of the box in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        """Height of the box in pixels."""
        return self.box[3] - self.box[1]


def _place(x0: float, y0: float, side: float, width: int, height: int) -> Box:
    """Shift a square to lie inside the image where it fits, then clip it to the image."""
    x0 = min(max(x0, 0.0), max(width - side, 0.0))
    y0 = min(max(y0, 0.0), max(height - side, 0.0))
    x1, y1 = min(x0 + side, width), min(y0 + side, height)
    return round(x0), round(y0), max(round(x1), round(x0) + 1), max(round(y1), round(y0) + 1)


def square_around(rect: Box, image_shape: tuple[int, int], settings: CropSettings) -> Box:
    """The anomaly-centred square of one defect rectangle (see the module docstring).

    Args:
        rect: the defect's bounding box ``(x0, y0, x1, y1)``.
        image_shape: ``(H, W)`` of the image.
        settings: crop parameters.

    Returns:
        The square, placed inside and clipped to the image.
    """
    height, width = image_shape
    long_side = max(height, width)
    box_w, box_h = rect[2] - rect[0], rect[3] - rect[1]
    if settings.sizing == "defect":
        half = max(int(max(box_w, box_h) * settings.context / 2), settings.min_pixels // 2)
    else:
        half = max(int(max(box_w, box_h) * (1 + settings.padding) / 2), int(settings.min_size * long_side))
    half = max(1, min(half, int(long_side / 2)))
    centre_x, centre_y = (rect[0] + rect[2]) // 2, (rect[1] + rect[3]) // 2
    return _place(centre_x - half, centre_y - half, 2 * half, width, height)


def box_gap(a: Box, b: Box) -> float:
    """Euclidean distance between two rectangles (0 when they touch or overlap).

    Args:
        a: first box.
        b: second box.

    Returns:
        The gap in pixels.
    """
    dx = max(a[0] - b[2], b[0] - a[2], 0)
    dy = max(a[1] - b[3], b[1] - a[3], 0)
    return math.hypot(dx, dy)


def _union_square(boxes: list[Box], image_shape: tuple[int, int]) -> Box:
    """Union of boxes, grown to a square on its short side, placed inside the image."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    side = max(x1 - x0, y1 - y0)
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    return _place(centre_x - side / 2, centre_y - side / 2, side, image_shape[1], image_shape[0])


def merge_close_boxes(boxes: list[Box], image_shape: tuple[int, int], merge_distance: float) -> list[Box]:
    """Merge boxes closer than ``int(merge_distance * max(H, W))`` until none are; largest first.

    Args:
        boxes: square regions.
        image_shape: ``(H, W)`` of the image.
        merge_distance: fraction of the image's long side.

    Returns:
        The merged boxes sorted by area, largest first (ties keep input order).
    """
    threshold = int(max(image_shape) * merge_distance)
    current = list(boxes)
    changed = True
    while changed and len(current) > 1:
        changed = False
        # connected groups of the "closer than threshold" graph
        group_of = list(range(len(current)))

        def find(i: int, parents: list[int] = group_of) -> int:
            while parents[i] != i:
                parents[i] = parents[parents[i]]
                i = parents[i]
            return i

        for i in range(len(current)):
            for j in range(i + 1, len(current)):
                if box_gap(current[i], current[j]) < threshold:
                    group_of[find(i)] = find(j)
        groups: dict[int, list[Box]] = {}
        for i, box in enumerate(current):
            groups.setdefault(find(i), []).append(box)
        if len(groups) < len(current):
            changed = True
            current = [group[0] if len(group) == 1 else _union_square(group, image_shape) for group in groups.values()]
    return sorted(current, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def defect_rectangles(mask: np.ndarray) -> list[Box]:
    """Bounding boxes of the external contours of a binary mask.

    Args:
        mask: ``(H, W)`` bool or 0/1 mask.

    Returns:
        Boxes ``(x0, y0, x1, y1)``, one per external contour.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        rects.append((x, y, x + w, y + h))
    return rects


def crop_boxes(
    mask: np.ndarray,
    n_anomalies: int,
    settings: CropSettings | None = None,
) -> list[Box]:
    """Anomaly-centred square boxes of a binary mask at image resolution.

    Args:
        mask: ``(H, W)`` binary mask of the image (MEBin's mask resized to the image).
        n_anomalies: MEBin's estimated anomaly count; at most this many boxes are kept
            (``+ 1`` with ``keep_extra``). A count of 0 with a non-empty mask keeps one box.
        settings: crop parameters.

    Returns:
        Boxes, largest first; ``[]`` when the mask is empty.
    """
    settings = settings or CropSettings()
    rects = defect_rectangles(mask)
    if not rects:
        return []
    squares = [square_around(rect, mask.shape[:2], settings) for rect in rects]
    merged = merge_close_boxes(squares, mask.shape[:2], settings.merge_distance)
    keep = max(1, n_anomalies) + (1 if settings.keep_extra else 0)
    return merged[:keep]
