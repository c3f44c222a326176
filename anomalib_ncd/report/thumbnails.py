"""Thumbnails of one image for the report: region boxes, anomaly-map overlay and the largest region.

Each image is read, shrunk and encoded on its own, so memory stays flat however many (or however
large) the images are: only one full-resolution image is alive at a time.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import read_image

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
"""RGB colour of each class index (cycled); the plots use the same colours as the boxes."""

JPEG_QUALITY: int = 85
"""JPEG quality of the thumbnails: small files, and the thin box lines stay crisp enough."""

OVERLAY_ALPHA: float = 0.5
"""Weight of the colour-mapped anomaly map in the overlay (the image gets the rest)."""


@dataclass(frozen=True)
class Thumbnails:
    """The three thumbnails of one image, as ``data:`` URIs.

    Attributes:
        boxes: The image with its region boxes drawn in the colour of their class.
        overlay: The anomaly map (colour-mapped) blended with the image.
        crop: The largest region that is not the whole image, or the image itself.
        crop_is_whole_image: ``True`` when ``crop`` is the whole image (no smaller region).
    """

    boxes: str
    overlay: str
    crop: str
    crop_is_whole_image: bool


def class_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of a class (the palette repeats after :data:`CLASS_COLOURS` entries).

    Args:
        index: the class index.

    Returns:
        ``(r, g, b)`` in ``0 .. 255``.

    Example:
        >>> class_colour(0) == class_colour(len(CLASS_COLOURS))
        True
    """
    return CLASS_COLOURS[int(index) % len(CLASS_COLOURS)]


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8`` RGB, whatever the file holds (grey files become three channels).

    Args:
        path: the image file.

    Returns:
        An ``(H, W, 3)`` ``uint8`` array.

    Raises:
        ValueError: if the reader returns something that is not an 8-bit grey or RGB image.
    """
    image = read_image(path)
    if image.dtype != np.uint8:
        msg = f"expected an 8-bit image, got {image.dtype} for {path}"
        raise ValueError(msg)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] != 3:
        msg = f"expected a grey or RGB image, got shape {image.shape} for {path}"
        raise ValueError(msg)
    return image


def thumbnail_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of a thumbnail whose long side is ``size``, keeping the aspect ratio.

    Args:
        height: source height in pixels.
        width: source width in pixels.
        size: long side of the thumbnail.

    Returns:
        ``(height, width)``; the short side is at least one pixel.

    Example:
        >>> thumbnail_shape(2000, 3000, 128)
        (85, 128)
        >>> thumbnail_shape(630, 100, 128)
        (128, 20)
    """
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an image so its long side is ``size`` pixels, keeping the aspect ratio.

    Args:
        image: an ``(H, W)`` or ``(H, W, C)`` array.
        size: long side of the result.

    Returns:
        The resized image (same dtype and channels).
    """
    height, width = image.shape[:2]
    new_height, new_width = thumbnail_shape(height, width, size)
    # Area averaging avoids aliasing when shrinking; linear is smoother when enlarging small crops.
    shrinking = new_height * new_width < height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (new_width, new_height), interpolation=interpolation)


def _box_rows(regions: pd.DataFrame) -> pd.DataFrame:
    """Regions in drawing order: whole-image frames first, then larger boxes under smaller ones."""
    area = (regions["x1"] - regions["x0"]) * (regions["y1"] - regions["y0"])
    order = np.lexsort((-area.to_numpy(), ~regions["whole_image"].to_numpy(dtype=bool)))
    return regions.iloc[order]


def draw_regions(thumbnail: np.ndarray, regions: pd.DataFrame, scale: tuple[float, float]) -> np.ndarray:
    """Draw region boxes (given in image pixels) on a thumbnail, in the colour of their class.

    Drawing on the thumbnail rather than the full image keeps the lines the same width for every
    image size.

    Args:
        thumbnail: the ``(h, w, 3)`` RGB thumbnail (not modified).
        regions: rows with ``x0, y0, x1, y1`` (exclusive ends), ``pred_class`` and ``whole_image``.
        scale: ``(y, x)`` factors from image pixels to thumbnail pixels.

    Returns:
        A copy of the thumbnail with the boxes drawn.
    """
    canvas = thumbnail.copy()
    height, width = canvas.shape[:2]
    thickness = 2 if min(height, width) >= 48 else 1
    for row in _box_rows(regions).itertuples(index=False):
        left = min(max(round(row.x0 * scale[1]), 0), width - 1)
        top = min(max(round(row.y0 * scale[0]), 0), height - 1)
        right = min(max(round(row.x1 * scale[1]) - 1, left), width - 1)
        bottom = min(max(round(row.y1 * scale[0]) - 1, top), height - 1)
        cv2.rectangle(canvas, (left, top), (right, bottom), class_colour(row.pred_class), thickness)
    return canvas


def normalise_map(anomaly_map: np.ndarray, map_range: tuple[float, float]) -> np.ndarray:
    """Map anomaly scores onto ``[0, 1]`` with ``map_range``, clipping outside values.

    Args:
        anomaly_map: any float array; NaN counts as the low end.
        map_range: ``(low, high)`` scores that become 0 and 1.

    Returns:
        A ``float32`` array in ``[0, 1]``.

    Example:
        >>> normalise_map(np.array([[0.0, 5.0, 20.0]]), (0.0, 10.0)).tolist()
        [[0.0, 0.5, 1.0]]
    """
    low, high = map_range
    span = max(high - low, float(np.finfo(np.float32).eps))  # a flat range must not divide by zero
    values = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32), nan=low, posinf=high, neginf=low)
    return np.clip((values - low) / span, 0.0, 1.0).astype(np.float32)


def overlay_map(thumbnail: np.ndarray, anomaly_map: np.ndarray, map_range: tuple[float, float]) -> np.ndarray:
    """Blend the colour-mapped anomaly map 50/50 with a thumbnail.

    The map is resized to the thumbnail, which covers the same field of view as the image, so
    maps of any resolution line up with it.

    Args:
        thumbnail: the ``(h, w, 3)`` RGB thumbnail.
        anomaly_map: the image's 2-D anomaly map.
        map_range: ``(low, high)`` of the colour scale.

    Returns:
        The ``(h, w, 3)`` RGB overlay.
    """
    height, width = thumbnail.shape[:2]
    unit = normalise_map(anomaly_map, map_range)
    unit = cv2.resize(unit, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, OVERLAY_ALPHA, thumbnail, 1.0 - OVERLAY_ALPHA, 0.0)


OBJECT_COLOUR = (255, 255, 0)  # yellow: unlike the class colours and the map's colour scale


def draw_object_outline(thumbnail: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """Draw the outline of an object mask (any resolution) on a thumbnail, one pixel wide, in yellow.

    Args:
        thumbnail: the ``(h, w, 3)`` RGB thumbnail (not modified).
        object_mask: the image's bool object mask.

    Returns:
        A copy with the outline; unchanged when the mask is the whole image (nothing to show).
    """
    canvas = thumbnail.copy()
    if np.asarray(object_mask).all():
        return canvas
    small = cv2.resize(np.asarray(object_mask, np.uint8), canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, OBJECT_COLOUR, 1)
    return canvas


def largest_region_crop(image: np.ndarray, regions: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Crop the largest region that is not a whole-image region.

    Args:
        image: the full-resolution ``(H, W, 3)`` image.
        regions: the image's regions (``x0, y0, x1, y1``, ``whole_image``).

    Returns:
        ``(crop, is_whole_image)``: the crop, or the image itself with ``True`` when the image has
        no smaller region (or its box is empty once clipped to the image).
    """
    boxes = regions.loc[~regions["whole_image"].to_numpy(dtype=bool)]
    if boxes.empty:
        return image, True
    area = (boxes["x1"] - boxes["x0"]) * (boxes["y1"] - boxes["y0"])
    row = boxes.iloc[int(np.argmax(area.to_numpy()))]
    height, width = image.shape[:2]
    x0, x1 = max(int(row["x0"]), 0), min(int(row["x1"]), width)
    y0, y1 = max(int(row["y0"]), 0), min(int(row["y1"]), height)
    if x1 <= x0 or y1 <= y0:
        return image, True
    return image[y0:y1, x0:x1], False


def to_data_uri(image: np.ndarray) -> str:
    """Encode an RGB image as a JPEG ``data:`` URI.

    Args:
        image: an ``(h, w, 3)`` ``uint8`` RGB array.

    Returns:
        ``"data:image/jpeg;base64,..."``.

    Raises:
        ValueError: if OpenCV cannot encode the image.
    """
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        msg = f"cannot encode a thumbnail of shape {image.shape} as JPEG"
        raise ValueError(msg)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def make_thumbnails(
    image_path: str | Path,
    anomaly_map: np.ndarray,
    regions: pd.DataFrame,
    map_range: tuple[float, float],
    size: int,
    object_prior: Any | None = None,
) -> Thumbnails:
    """Read one image and build its three thumbnails, each with long side ``size``.

    Args:
        image_path: the image file (grey or colour).
        anomaly_map: its 2-D anomaly map, any resolution.
        regions: its regions (``x0, y0, x1, y1`` in image pixels, ``pred_class``, ``whole_image``).
        map_range: ``(low, high)`` of the overlay colour scale.
        size: long side of each thumbnail in pixels.
        object_prior: the run's object prior (anything with ``mask(image, path)``); its object
            outline is drawn on the regions thumbnail, so the prior can be checked by eye.

    Returns:
        The thumbnails as ``data:`` URIs.
    """
    image = load_rgb(image_path)
    small = fit_long_side(image, size)
    scale = (small.shape[0] / image.shape[0], small.shape[1] / image.shape[1])
    boxes = draw_regions(small, regions, scale)
    if object_prior is not None:
        boxes = draw_object_outline(boxes, object_prior.mask(read_image(image_path), image_path))
    crop, whole = largest_region_crop(image, regions)
    crop_small = fit_long_side(crop, size)
    del image, crop  # only the thumbnails are kept; the full image can go now
    return Thumbnails(
        boxes=to_data_uri(boxes),
        overlay=to_data_uri(overlay_map(small, anomaly_map, map_range)),
        crop=to_data_uri(crop_small),
        crop_is_whole_image=whole,
    )
