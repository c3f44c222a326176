"""Defect-free images for the synthetic dataset: real textures and a simple object.

Categories:
    ``brick``, ``grass``, ``gravel``: random crops of the CC0 textures shipped with scikit-image
        (``skimage.data.brick()`` etc., 512x512 grey), after a random flip / 90-degree turn and a
        small gain change, so no two normal images are the same. Defects may go anywhere but a
        thin border.
    ``washer``: a flat ring (outer and inner circle) on a plain dark background, with a soft
        light gradient and faint noise that vary per image. Defects go only on the ring.

Colour images tint the grey rendering with a per-category colour; grey images are ``(H, W)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

TEXTURE_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel")
OBJECT_CATEGORIES: tuple[str, ...] = ("washer",)
CATEGORIES: tuple[str, ...] = TEXTURE_CATEGORIES + OBJECT_CATEGORIES

# RGB gains that turn the grey rendering into a plausible colour image.
_TINTS: dict[str, tuple[float, float, float]] = {
    "brick": (1.15, 0.80, 0.65),
    "grass": (0.75, 1.10, 0.65),
    "gravel": (1.0, 0.97, 0.90),
    "washer": (0.90, 0.95, 1.10),
}


@dataclass(frozen=True)
class Background:
    """A defect-free image and the region where defects may be painted.

    Attributes:
        image: ``float32`` array in ``[0, 255]``, ``(H, W)`` grey or ``(H, W, 3)`` RGB.
        allowed: ``bool`` ``(H, W)``: pixels that belong to the product surface.
    """

    image: np.ndarray
    allowed: np.ndarray


def render_background(category: str, shape: tuple[int, int], rng: np.random.Generator, *, colour: bool) -> Background:
    """Render one defect-free image of ``category``.

    Args:
        category: one of :data:`CATEGORIES`.
        shape: ``(height, width)``.
        rng: the random generator (consumed).
        colour: RGB output when True, grey otherwise.

    Returns:
        The image and its defect-allowed region.

    Raises:
        ValueError: on an unknown category or a size smaller than 32 pixels.
    """
    height, width = shape
    if min(height, width) < 32:
        msg = f"synthetic images must be at least 32x32, got {height}x{width}"
        raise ValueError(msg)
    if category in TEXTURE_CATEGORIES:
        grey, allowed = _texture_crop(category, shape, rng)
    elif category in OBJECT_CATEGORIES:
        grey, allowed = _washer(shape, rng)
    else:
        msg = f"unknown synthetic category {category!r}; choose from {list(CATEGORIES)}"
        raise ValueError(msg)
    image = np.clip(grey[..., None] * np.asarray(_TINTS[category], dtype=np.float32), 0, 255) if colour else grey
    return Background(image=image.astype(np.float32), allowed=allowed)


@cache
def _texture(category: str) -> np.ndarray:
    # Imported on first use: skimage.data is slow to import and only the textures need it.
    skimage_data = importlib.import_module("skimage.data")
    return getattr(skimage_data, category)().astype(np.float32)


def _texture_crop(category: str, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    texture = np.rot90(_texture(category), k=int(rng.integers(4)))
    if rng.random() < 0.5:
        texture = texture[:, ::-1]
    # Up-scale when the request is larger than the texture (crops must fit), never down-scale:
    # down-scaling would change the texture's grain between image sizes more than needed.
    scale = max(1.0, height / texture.shape[0], width / texture.shape[1])
    if scale > 1.0:
        new_size = (int(np.ceil(texture.shape[1] * scale)), int(np.ceil(texture.shape[0] * scale)))
        texture = cv2.resize(np.ascontiguousarray(texture), new_size, interpolation=cv2.INTER_LINEAR)
    top = int(rng.integers(texture.shape[0] - height + 1))
    left = int(rng.integers(texture.shape[1] - width + 1))
    crop = texture[top : top + height, left : left + width] * rng.uniform(0.92, 1.08)
    allowed = np.zeros(shape, dtype=bool)
    border = max(2, min(shape) // 32)
    allowed[border:-border, border:-border] = True
    return np.clip(crop, 0, 255).astype(np.float32), allowed


def _washer(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    side = min(height, width)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre_y = (height - 1) / 2 + rng.uniform(-0.02, 0.02) * side
    centre_x = (width - 1) / 2 + rng.uniform(-0.02, 0.02) * side
    radius = np.hypot(rows - centre_y, cols - centre_x)
    outer = side * rng.uniform(0.40, 0.44)
    inner = side * rng.uniform(0.15, 0.18)
    ring = (radius <= outer) & (radius >= inner)

    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * (cols - centre_x) + np.sin(angle) * (rows - centre_y)) / side
    surface = 165 + 30 * gradient + rng.normal(0, 3, size=shape)
    background = 35 + rng.normal(0, 2, size=shape)
    grey = np.where(ring, surface, background)

    # Keep defects off the ring's edges so a defect never touches the background.
    margin = max(2, side // 40)
    allowed = (radius <= outer - margin) & (radius >= inner + margin)
    return np.clip(grey, 0, 255).astype(np.float32), allowed
