"""Painters of visually distinct synthetic defect types, each with a pixel-exact mask.

Every painter draws a *footprint* (the defect's pixels) and new values for them; size, position
and orientation are random per call, scaled to the image's shorter side ``s``. Then
:func:`paint_defect` keeps only the footprint inside the allowed region, copies the new values there
and guarantees that every footprint pixel differs from the clean image by at least ``min_delta``
grey levels in some channel (pushing weak pixels in the defect's direction). Hence the returned
mask is *exactly* the set of changed pixels, and every defect is visible.

Types (``s`` = shorter image side):
    ``scratch``: 1 to 3 nearly parallel thin dark lines, slightly bent, 25-50% of ``s`` long.
    ``hole``: a dark round pit (radius 4-8% of ``s``) with a bright rim.
    ``stain``: a soft, irregular blob, darker (grey) or brown-tinted (colour), denser at its core.
    ``crack``: a jagged dark thin line from a random walk, with one or two side branches.
    ``spots``: a cluster of 6 to 14 small dark dots.
    ``scuff``: a rotated rectangular patch whose texture is replaced by fine bright/dark streaks.
    ``burn``: a bright, irregular, soft-edged region (over-exposed / heat mark).
    ``cut``: one straight bright line, thicker than a scratch, 30-60% of ``s`` long.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "crack", "spots", "scuff", "burn", "cut")
"""All defect types the generator can paint, in a fixed order."""

DEFAULT_DEFECT_TYPES: tuple[str, ...] = DEFECT_TYPES[:4]
"""The types generated unless others are asked for."""

MIN_DEFECT_PIXELS = 6
_MAX_ATTEMPTS = 50

# A painter returns (footprint, new values for the whole image); only footprint pixels are used.
Painter = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def paint_defect(
    clean: np.ndarray,
    allowed: np.ndarray,
    defect_type: str,
    rng: np.random.Generator,
    *,
    min_delta: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``defect_type`` on a copy of ``clean``.

    Args:
        clean: ``uint8`` image, ``(H, W)`` or ``(H, W, 3)``.
        allowed: ``bool`` ``(H, W)``: where the defect may be.
        defect_type: one of :data:`DEFECT_TYPES`.
        rng: the random generator (consumed).
        min_delta: the smallest change, in grey levels, of every defect pixel (1 to 127).

    Returns:
        ``(image, mask)``: the defective ``uint8`` image and the ``bool`` mask of the pixels that
        differ from ``clean`` (all others are equal to ``clean``).

    Raises:
        ValueError: on an unknown type, a bad ``min_delta`` or an empty allowed region.
        RuntimeError: if no defect of at least 6 pixels fits in the allowed region.
    """
    if defect_type not in _PAINTERS:
        msg = f"unknown defect type {defect_type!r}; choose from {list(DEFECT_TYPES)}"
        raise ValueError(msg)
    if not 1 <= min_delta <= 127:
        msg = f"min_delta must be in [1, 127], got {min_delta}"
        raise ValueError(msg)
    if not allowed.any():
        msg = "the allowed region is empty: nowhere to paint a defect"
        raise ValueError(msg)
    painter, direction = _PAINTERS[defect_type]
    source = clean.astype(np.float32)
    for _ in range(_MAX_ATTEMPTS):
        footprint, values = painter(source, allowed, rng)
        footprint &= allowed
        if footprint.sum() >= MIN_DEFECT_PIXELS:
            return _composite(clean, values, footprint, direction, min_delta), footprint
    msg = f"could not fit a {defect_type} of {MIN_DEFECT_PIXELS}+ pixels in the allowed region"
    raise RuntimeError(msg)


def _composite(
    clean: np.ndarray, values: np.ndarray, footprint: np.ndarray, direction: int, min_delta: int
) -> np.ndarray:
    image = clean.copy()
    image[footprint] = np.clip(np.rint(values[footprint]), 0, 255).astype(np.uint8)
    change = np.abs(image.astype(np.int16) - clean.astype(np.int16))
    if change.ndim == 3:
        change = change.max(axis=-1)
    weak = footprint & (change < min_delta)
    if weak.any():
        # Push weak pixels by exactly min_delta, the defect's way unless that leaves [0, 255].
        base = clean[weak].astype(np.int16)
        pushed = base + direction * min_delta
        fits = (pushed >= 0) & (pushed <= 255)
        image[weak] = np.where(fits, pushed, base - direction * min_delta).astype(np.uint8)
    return image


# ----------------------------------------------------------------------------- helpers


def _side(allowed: np.ndarray) -> int:
    return min(allowed.shape)


def _random_point(allowed: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Return ``(x, y)`` of a random allowed pixel."""
    flat = np.flatnonzero(allowed)
    row, col = np.divmod(int(flat[rng.integers(flat.size)]), allowed.shape[1])
    return float(col), float(row)


def _canvas(allowed: np.ndarray) -> np.ndarray:
    return np.zeros(allowed.shape, dtype=np.uint8)


def _as_points(points: np.ndarray) -> np.ndarray:
    return np.rint(points).astype(np.int32).reshape(-1, 1, 2)


def _weighted(image: np.ndarray, colour: float | tuple[float, float, float], weight: np.ndarray) -> np.ndarray:
    """Blend ``image`` toward ``colour`` with a per-pixel ``weight`` in ``[0, 1]``."""
    weight = weight.astype(np.float32)
    if image.ndim == 3:
        weight = weight[..., None]
        target = np.asarray(colour if isinstance(colour, tuple) else (colour,) * 3, dtype=np.float32)
    else:
        target = np.float32(np.mean(colour) if isinstance(colour, tuple) else colour)
    return image * (1 - weight) + target * weight


def _irregular_blob(
    allowed: np.ndarray, rng: np.random.Generator, radius: float, roughness: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return a filled irregular polygon around a random centre and its distance-to-edge map."""
    centre_x, centre_y = _random_point(allowed, rng)
    n_vertices = 18
    angles = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    # Smooth radial noise: a few low-frequency harmonics give lumpy but not spiky outlines.
    radial = np.ones(n_vertices)
    for harmonic in (2, 3, 5):
        radial += roughness / harmonic * np.sin(harmonic * angles + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.6, 1.0)
    tilt = rng.uniform(0, np.pi)
    local_x = radius * radial * np.cos(angles)
    local_y = radius * radial * np.sin(angles) * aspect
    points = np.stack(
        [
            centre_x + local_x * np.cos(tilt) - local_y * np.sin(tilt),
            centre_y + local_x * np.sin(tilt) + local_y * np.cos(tilt),
        ],
        axis=1,
    )
    canvas = _canvas(allowed)
    cv2.fillPoly(canvas, [_as_points(points)], 255, lineType=cv2.LINE_8)
    distance = cv2.distanceTransform(canvas, cv2.DIST_L2, 3)
    return canvas > 0, distance


# ----------------------------------------------------------------------------- painters


def _scratch(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    canvas = _canvas(allowed)
    centre_x, centre_y = _random_point(allowed, rng)
    angle = rng.uniform(0, np.pi)
    thickness = 1 if side < 160 else 2
    for _ in range(int(rng.integers(1, 4))):
        length = side * rng.uniform(0.25, 0.5)
        line_angle = angle + rng.uniform(-0.12, 0.12)
        offset = rng.uniform(-0.06, 0.06) * side
        start_x = centre_x - np.sin(angle) * offset
        start_y = centre_y + np.cos(angle) * offset
        t = np.array([-0.5, 0.0, 0.5])[:, None] * length
        direction = np.array([np.cos(line_angle), np.sin(line_angle)])
        normal = np.array([-direction[1], direction[0]])
        bend = np.array([0.0, rng.uniform(-0.05, 0.05) * length, 0.0])[:, None]
        points = np.array([start_x, start_y]) + t * direction + bend * normal
        cv2.polylines(canvas, [_as_points(points)], isClosed=False, color=255, thickness=thickness)
    return canvas > 0, image * 0.35


def _hole(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    centre_x, centre_y = _random_point(allowed, rng)
    radius = max(2.0, side * rng.uniform(0.04, 0.08))
    rim_width = max(1.0, radius * 0.3)
    rows, cols = np.indices(allowed.shape, dtype=np.float32)
    distance = np.hypot(rows - centre_y, cols - centre_x)
    pit = distance <= radius
    rim = (distance > radius) & (distance <= radius + rim_width)
    dark_pit = _weighted(image, 20.0, np.full(pit.shape, 0.8))
    bright_rim = _weighted(image, 250.0, np.full(rim.shape, 0.6))
    values = np.where(rim[..., None] if image.ndim == 3 else rim, bright_rim, dark_pit)
    return pit | rim, values


def _stain(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    radius = _side(allowed) * rng.uniform(0.08, 0.16)
    footprint, distance = _irregular_blob(allowed, rng, radius, roughness=0.5)
    core = np.clip(distance / max(radius * 0.5, 1.0), 0, 1)
    weight = 0.35 + 0.35 * core
    return footprint, _weighted(image, (95.0, 60.0, 25.0), weight)


def _crack(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    canvas = _canvas(allowed)
    step = max(2.0, side * 0.03)

    def walk(x: float, y: float, heading: float, n_steps: int) -> np.ndarray:
        points = [(x, y)]
        for _ in range(n_steps):
            heading += rng.uniform(-0.6, 0.6)
            x, y = x + step * np.cos(heading), y + step * np.sin(heading)
            points.append((x, y))
        return np.array(points)

    heading = rng.uniform(0, 2 * np.pi)
    trunk = walk(*_random_point(allowed, rng), heading, int(rng.integers(10, 16)))
    # The trunk is a little thicker than a scratch at >= 128 px so the crack stays visible on texture.
    cv2.polylines(canvas, [_as_points(trunk)], isClosed=False, color=255, thickness=max(1, side // 64))
    for _ in range(int(rng.integers(1, 3))):
        fork = trunk[int(rng.integers(2, len(trunk) - 2))]
        branch_heading = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)
        branch = walk(float(fork[0]), float(fork[1]), branch_heading, int(rng.integers(4, 8)))
        cv2.polylines(canvas, [_as_points(branch)], isClosed=False, color=255, thickness=1)
    return canvas > 0, image * 0.25


def _spots(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    canvas = _canvas(allowed)
    centre_x, centre_y = _random_point(allowed, rng)
    spread = side * rng.uniform(0.05, 0.09)
    largest = max(1, side // 64)
    for _ in range(int(rng.integers(6, 15))):
        x, y = centre_x + rng.normal(0, spread), centre_y + rng.normal(0, spread)
        radius = int(rng.integers(1, largest + 2))
        cv2.circle(canvas, (round(x), round(y)), radius, 255, thickness=-1, lineType=cv2.LINE_8)
    return canvas > 0, image * 0.3


def _scuff(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    centre = _random_point(allowed, rng)
    size = (side * rng.uniform(0.15, 0.3), side * rng.uniform(0.08, 0.15))
    angle = rng.uniform(0, 180)
    corners = cv2.boxPoints((centre, size, angle))
    canvas = _canvas(allowed)
    cv2.fillPoly(canvas, [_as_points(corners)], 255, lineType=cv2.LINE_8)
    rows, cols = np.indices(allowed.shape, dtype=np.float32)
    across = cols * np.cos(np.deg2rad(angle)) + rows * np.sin(np.deg2rad(angle))
    period = rng.uniform(2.5, 4.5)
    streaks = 128 + 90 * np.sin(2 * np.pi * across / period + rng.normal(0, 0.4, size=allowed.shape))
    if image.ndim == 3:
        streaks = streaks[..., None]
    return canvas > 0, 0.3 * image + 0.7 * streaks


def _burn(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    radius = _side(allowed) * rng.uniform(0.07, 0.13)
    footprint, distance = _irregular_blob(allowed, rng, radius, roughness=0.3)
    core = np.clip(distance / max(radius * 0.4, 1.0), 0, 1)
    return footprint, _weighted(image, (255.0, 250.0, 225.0), 0.5 + 0.45 * core)


def _cut(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = _side(allowed)
    centre_x, centre_y = _random_point(allowed, rng)
    length = side * rng.uniform(0.3, 0.6)
    angle = rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
    start = (round(centre_x - half[0]), round(centre_y - half[1]))
    end = (round(centre_x + half[0]), round(centre_y + half[1]))
    canvas = _canvas(allowed)
    cv2.line(canvas, start, end, 255, thickness=max(2, side // 50), lineType=cv2.LINE_8)
    return canvas > 0, _weighted(image, 245.0, np.full(allowed.shape, 0.9))


# (painter, direction in which weak pixels are pushed: -1 darker, +1 brighter)
_PAINTERS: dict[str, tuple[Painter, int]] = {
    "scratch": (_scratch, -1),
    "hole": (_hole, -1),
    "stain": (_stain, -1),
    "crack": (_crack, -1),
    "spots": (_spots, -1),
    "scuff": (_scuff, +1),
    "burn": (_burn, +1),
    "cut": (_cut, +1),
}
