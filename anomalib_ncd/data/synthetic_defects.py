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

Small defects (:func:`paint_small_defect`, the ``highres_small`` mode): the area is a fraction of
the image drawn log-uniformly from a range (0.05-0.5% by default: 390 to 3,900 pixels of a 1024 x
768 image), the painted area is within 10% of it and inside the range, and the whole defect lies
in the allowed region (never clipped). Types, as they look at that size:
    ``scratch``: 1-2 nearly parallel, slightly bent, thin (1-4 px) *bright* lines; more lines, not
        longer ones, beyond 40% of the shorter side.
    ``hole``: a round *black* pit inside a *bright* rim (a ring of light around a dark dot).
    ``stain``: one soft, lumpy *rust-brown* blob (darker grey in grey images), denser at its core.
    ``crack``: a jagged, *black* thin random-walk line with one or two thinner side branches.
    ``spots``: a loose cluster of 5-11 small round *dark blue-grey* dots.
A faint defect is blended toward its colour with a contrast factor in :data:`FAINT_CONTRAST` and
moves every pixel by at least :data:`FAINT_MIN_DELTA` levels instead of 30. In 16-bit images
(``uint16``) every painter works on the same 8-bit scale and the levels are 257 times finer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        clean: ``uint8`` or ``uint16`` image, ``(H, W)`` or ``(H, W, 3)``.
        allowed: ``bool`` ``(H, W)``: where the defect may be.
        defect_type: one of :data:`DEFECT_TYPES`.
        rng: the random generator (consumed).
        min_delta: the smallest change, in 8-bit grey levels, of every defect pixel (1 to 127; times
            257 for ``uint16`` images).

    Returns:
        ``(image, mask)``: the defective image (``clean``'s dtype) and the ``bool`` mask of the pixels
        that differ from ``clean`` (all others are equal to ``clean``).

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
    # Painters work on the 8-bit scale; 16-bit images are divided down and their values scaled back.
    scale = level_scale(clean.dtype)
    source = clean.astype(np.float32) if scale == 1 else clean.astype(np.float32) / scale
    for _ in range(_MAX_ATTEMPTS):
        footprint, values = painter(source, allowed, rng)
        footprint &= allowed
        if footprint.sum() >= MIN_DEFECT_PIXELS:
            if scale != 1:
                values = values * np.float32(scale)
            return composite_defect(clean, values, footprint, direction, min_delta * scale), footprint
    msg = f"could not fit a {defect_type} of {MIN_DEFECT_PIXELS}+ pixels in the allowed region"
    raise RuntimeError(msg)


def level_scale(dtype: np.dtype | type) -> int:
    """Return the factor from 8-bit grey levels to ``dtype``'s levels: 1 for ``uint8``, 257 for ``uint16``.

    Args:
        dtype: ``uint8`` or ``uint16``.

    Returns:
        1 or 257 (257 maps 255 to 65535 exactly).

    Raises:
        ValueError: for any other dtype.
    """
    if np.dtype(dtype) == np.uint8:
        return 1
    if np.dtype(dtype) == np.uint16:
        return 257
    msg = f"synthetic images are uint8 or uint16, got {np.dtype(dtype)}"
    raise ValueError(msg)


def composite_defect(
    clean: np.ndarray, values: np.ndarray, footprint: np.ndarray, direction: int, min_delta: int
) -> np.ndarray:
    """Copy ``values`` into ``clean`` on ``footprint`` so that every footprint pixel visibly changes.

    Args:
        clean: ``uint8`` or ``uint16`` image, ``(H, W)`` or ``(H, W, 3)``.
        values: float image of the same shape and scale as ``clean``; only footprint pixels are used.
        footprint: ``bool`` ``(H, W)``: the defect's pixels.
        direction: where too weak pixels are pushed: -1 darker, +1 brighter.
        min_delta: the smallest change of every footprint pixel, in ``clean``'s levels (at most
            half its range).

    Returns:
        The defective image: equal to ``clean`` off the footprint, changed by at least
        ``min_delta`` in some channel on it.
    """
    top = np.iinfo(clean.dtype).max
    image = clean.copy()
    image[footprint] = np.clip(np.rint(values[footprint]), 0, top).astype(clean.dtype)
    change = np.abs(image.astype(np.int32) - clean.astype(np.int32))
    if change.ndim == 3:
        change = change.max(axis=-1)
    weak = footprint & (change < min_delta)
    if weak.any():
        # Push weak pixels by exactly min_delta, the defect's way unless that leaves the range.
        base = clean[weak].astype(np.int32)
        pushed = base + direction * min_delta
        fits = (pushed >= 0) & (pushed <= top)
        image[weak] = np.where(fits, pushed, base - direction * min_delta).astype(clean.dtype)
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
    target: np.ndarray | np.float32
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


# ----------------------------------------------------------------------------- small defects
#
# The ``highres_small`` mode paints defects whose area is a drawn fraction of the image, not a
# fraction of its side: on a 1024x768 image a defect covers a few hundred to a few thousand pixels.
# Each type draws a random *shape* once per attempt, then only its linear size is fitted to the
# drawn area; the shape is rendered on a small local canvas, so painting costs the same on any
# image size.

SMALL_DEFECT_TYPES: tuple[str, ...] = ("scratch", "hole", "stain", "crack", "spots")
"""The defect types of the ``highres_small`` mode, in a fixed order."""

DEFAULT_SMALL_DEFECT_TYPES: tuple[str, ...] = SMALL_DEFECT_TYPES[:4]
"""The small types generated unless others are asked for (the same names as the default four)."""

DEFAULT_DEFECT_AREA: tuple[float, float] = (0.0005, 0.005)
"""Default range of a small defect's area, as a fraction of the image (0.05% to 0.5%)."""

FAINT_CONTRAST: tuple[float, float] = (0.15, 0.35)
"""Range of the contrast factor of a faint defect (1.0 for the others)."""

FAINT_MIN_DELTA = 4
"""The smallest change, in 8-bit grey levels, of a faint defect's pixels (30 for the others)."""

MAX_DEFECT_AREA = 0.05
"""The largest area fraction a small defect may be asked for."""

_AREA_TOLERANCE = 0.1  # an accepted defect's area is within 10% of its drawn area
_FIT_STEPS = 10
_PLACEMENT_TRIES = 10

# A shape renderer maps a linear size to (labels, weight) on a local canvas centred on the shape:
# labels 0 outside, 1 body, 2 rim; weight in [0, 1] scales the blend toward the type's tone.
ShapeRenderer = Callable[[float], tuple[np.ndarray, np.ndarray]]
# A shape drawer draws one random shape: (rng, target pixels, image's shorter side) -> (renderer,
# first size guess).
ShapeDrawer = Callable[[np.random.Generator, float, int], tuple[ShapeRenderer, float]]


@dataclass(frozen=True)
class SmallDefect:
    """What :func:`paint_small_defect` painted.

    Attributes:
        defect_type: one of :data:`SMALL_DEFECT_TYPES`.
        target_area: the drawn area, as a fraction of the image.
        area: the painted (= changed) area, as a fraction of the image.
        faint: whether the defect was painted with reduced contrast.
        contrast: the contrast factor (1.0 unless faint).
        x: column of the defect's centre.
        y: row of the defect's centre.
    """

    defect_type: str
    target_area: float
    area: float
    faint: bool
    contrast: float
    x: int
    y: int


@dataclass(frozen=True)
class _Tone:
    """The colour a part of a defect is blended toward (8-bit RGB), how far, and its push direction."""

    colour: tuple[float, float, float]
    strength: float
    direction: int


def paint_small_defect(
    clean: np.ndarray,
    allowed: np.ndarray,
    defect_type: str,
    rng: np.random.Generator,
    *,
    area_range: tuple[float, float] = DEFAULT_DEFECT_AREA,
    faint: bool = False,
    min_delta: int = 30,
) -> tuple[np.ndarray, np.ndarray, SmallDefect]:
    """Paint one small defect whose area is a fraction of the image drawn from ``area_range``.

    The area fraction is drawn log-uniformly from ``area_range``; the painted area is within 10% of
    it and always inside ``area_range``. The whole defect lies in the allowed region (it is never
    clipped). A faint defect is blended toward its tone with a contrast factor drawn from
    :data:`FAINT_CONTRAST` and moves its pixels by at least :data:`FAINT_MIN_DELTA` levels instead
    of ``min_delta``.

    Args:
        clean: ``uint8`` or ``uint16`` image, ``(H, W)`` or ``(H, W, 3)``.
        allowed: ``bool`` ``(H, W)``: where the defect may be.
        defect_type: one of :data:`SMALL_DEFECT_TYPES`.
        rng: the random generator (consumed).
        area_range: ``(low, high)`` area fractions, ``0 < low <= high <=`` :data:`MAX_DEFECT_AREA`.
        faint: paint with reduced contrast.
        min_delta: the smallest change, in 8-bit grey levels, of a non-faint defect's pixels.

    Returns:
        ``(image, mask, defect)``: the defective image (``clean``'s dtype), the ``bool`` mask of
        exactly the changed pixels, and what was painted.

    Raises:
        ValueError: on an unknown type, a bad ``area_range`` or ``min_delta``, or an empty allowed
            region.
        RuntimeError: if no defect of the drawn area fits in the allowed region.
    """
    if defect_type not in _SMALL_TYPES:
        msg = f"unknown small defect type {defect_type!r}; choose from {list(SMALL_DEFECT_TYPES)}"
        raise ValueError(msg)
    check_defect_area(area_range)
    if not 1 <= min_delta <= 127:
        msg = f"min_delta must be in [1, 127], got {min_delta}"
        raise ValueError(msg)
    if not allowed.any():
        msg = "the allowed region is empty: nowhere to paint a defect"
        raise ValueError(msg)
    scale = level_scale(clean.dtype)
    total = allowed.size
    low, high = area_range
    # Log-uniform: a tenfold range gets as many defects near its small end as near its large end.
    target_area = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    contrast = float(rng.uniform(*FAINT_CONTRAST)) if faint else 1.0
    delta = (FAINT_MIN_DELTA if faint else min_delta) * scale
    target = target_area * total
    lowest = max(low * total, (1 - _AREA_TOLERANCE) * target, MIN_DEFECT_PIXELS)
    highest = min(high * total, (1 + _AREA_TOLERANCE) * target)
    drawer, exponent, tones = _SMALL_TYPES[defect_type]
    for _ in range(_MAX_ATTEMPTS):
        render, size = drawer(rng, target, min(allowed.shape))
        labels, weight = _fit_size(render, size, exponent, target, max(allowed.shape))
        body = labels > 0
        if not lowest <= np.count_nonzero(body) <= highest:
            continue
        corner = _place(body, allowed, rng)
        if corner is None:
            continue
        top, left = corner
        bottom, right = top + labels.shape[0], left + labels.shape[1]
        patch = clean[top:bottom, left:right]
        source = patch.astype(np.float32) / np.float32(scale)
        painted = patch
        for label, tone in enumerate(tones, start=1):
            values = _weighted(source, tone.colour, tone.strength * contrast * weight) * np.float32(scale)
            # The parts are disjoint, so each one changes only its own pixels of ``painted``.
            painted = composite_defect(painted, values, labels == label, tone.direction, delta)
        image = clean.copy()
        image[top:bottom, left:right] = painted
        mask = np.zeros(allowed.shape, dtype=bool)
        mask[top:bottom, left:right] = body
        defect = SmallDefect(
            defect_type=defect_type,
            target_area=target_area,
            area=float(np.count_nonzero(body)) / total,
            faint=faint,
            contrast=contrast,
            x=left + labels.shape[1] // 2,
            y=top + labels.shape[0] // 2,
        )
        return image, mask, defect
    msg = f"could not fit a {defect_type} of {target_area:.4%} of the image in the allowed region"
    raise RuntimeError(msg)


def check_defect_area(area_range: tuple[float, float]) -> None:
    """Check a small defect's area range.

    Args:
        area_range: ``(low, high)`` area fractions.

    Raises:
        ValueError: unless ``0 < low <= high <=`` :data:`MAX_DEFECT_AREA`.
    """
    if len(area_range) != 2 or not 0 < area_range[0] <= area_range[1] <= MAX_DEFECT_AREA:
        msg = f"defect_area must be (low, high) with 0 < low <= high <= {MAX_DEFECT_AREA}, got {area_range}"
        raise ValueError(msg)


def _place(body: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """Return the ``(top, left)`` of a random position where ``body`` lies wholly in ``allowed``.

    A few random centres first (cheap, and enough on textures); then, for a shape that fits only
    in few places (a long line on the washer's ring), every fitting position from one FFT
    correlation, or ``None`` when there is none.
    """
    height, width = body.shape
    if height > allowed.shape[0] or width > allowed.shape[1]:
        return None
    for _ in range(_PLACEMENT_TRIES):
        centre_x, centre_y = _random_point(allowed, rng)
        top, left = int(centre_y) - height // 2, int(centre_x) - width // 2
        if top < 0 or left < 0 or top + height > allowed.shape[0] or left + width > allowed.shape[1]:
            continue
        if allowed[top : top + height, left : left + width][body].all():
            return top, left
    from scipy.signal import fftconvolve

    # Pixels of the body off the allowed region, for every (top, left): a correlation.
    outside = fftconvolve((~allowed).astype(np.float32), body[::-1, ::-1].astype(np.float32), mode="valid")
    fitting = np.flatnonzero(outside < 0.5)
    if fitting.size == 0:
        return None
    top, left = np.divmod(int(fitting[rng.integers(fitting.size)]), outside.shape[1])
    return int(top), int(left)


def _fit_size(
    render: ShapeRenderer, size: float, exponent: float, target: float, largest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render the shape at the size whose area is closest to ``target`` pixels (area ~ size**exponent)."""
    labels, weight = render(size)
    for _ in range(_FIT_STEPS):
        area = max(int(np.count_nonzero(labels)), 1)
        if abs(area - target) <= 0.5 * _AREA_TOLERANCE * target:
            break
        # Capped: a shape larger than the image cannot be placed anyway.
        size = min(size * (target / area) ** (1 / exponent), float(largest))
        labels, weight = render(size)
    return labels, weight


def _local_grid(half_height: int, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` offsets from the centre of a ``(2h+1, 2w+1)`` canvas."""
    rows, cols = np.mgrid[-half_height : half_height + 1, -half_width : half_width + 1]
    return rows.astype(np.float32), cols.astype(np.float32)


def _polyline_shape(paths: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(points (N, 2) as x, y around 0, thickness)`` polylines on a canvas centred on 0."""
    reach = max(float(np.abs(points).max()) + thickness for points, thickness in paths)
    half = int(np.ceil(reach)) + 1
    canvas = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.uint8)
    for points, thickness in paths:
        cv2.polylines(canvas, [_as_points(points + half)], isClosed=False, color=1, thickness=thickness)
    return canvas, np.ones(canvas.shape, dtype=np.float32)


def _line_thickness(target: float) -> int:
    # Thin at every size; a larger area makes the line longer first, a little thicker second.
    return 1 if target < 600 else 2 if target < 1800 else 3 if target < 3500 else 4


def _small_scratch(rng: np.random.Generator, target: float, side: int) -> tuple[ShapeRenderer, float]:
    """1-2 (more for large areas) nearly parallel, slightly bent, thin bright lines."""
    thickness = _line_thickness(target)
    # More lines rather than lines longer than 40% of the shorter side, so that they fit.
    n_lines = max(int(rng.integers(1, 3)), int(np.ceil(target / (thickness * 0.4 * side))))
    angle = rng.uniform(0, np.pi)
    spacing = 3 * thickness + rng.uniform(2, 5)
    tilts = rng.uniform(-0.04, 0.04, n_lines)
    bends = rng.uniform(-0.04, 0.04, n_lines)
    lengths = rng.uniform(0.7, 1.0, n_lines)
    shifts = rng.uniform(-0.15, 0.15, n_lines)
    t = np.linspace(-0.5, 0.5, 9)

    def render(length: float) -> tuple[np.ndarray, np.ndarray]:
        paths = []
        for index in range(n_lines):
            line_angle = angle + tilts[index]
            direction = np.array([np.cos(line_angle), np.sin(line_angle)])
            normal = np.array([-direction[1], direction[0]])
            offset = (index - (n_lines - 1) / 2) * spacing
            along = (t + shifts[index]) * length * lengths[index]
            across = offset + bends[index] * length * (1 - (2 * t) ** 2)
            paths.append((along[:, None] * direction + across[:, None] * normal, thickness))
        return _polyline_shape(paths)

    return render, target / (thickness * n_lines * 0.85)


def _small_crack(rng: np.random.Generator, target: float, side: int) -> tuple[ShapeRenderer, float]:
    """A jagged random-walk dark line with one or two thinner side branches."""
    thickness = _line_thickness(target)
    # Steps of at most ~3% of the shorter side (more of them for a long crack): jagged and compact.
    n_steps = max(int(rng.integers(10, 16)), min(60, int(np.ceil(target / (thickness * 0.04 * side)))))
    heading = rng.uniform(0, 2 * np.pi)
    turns = rng.uniform(-0.6, 0.6, n_steps)
    branches = []
    for _ in range(int(rng.integers(1, 3))):
        fork = int(rng.integers(2, n_steps - 2))
        branch_turn = rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)
        branches.append((fork, branch_turn, rng.uniform(-0.6, 0.6, int(rng.integers(4, 8)))))

    def walk(start: np.ndarray, start_heading: float, step_turns: np.ndarray, step: float) -> np.ndarray:
        headings = start_heading + np.cumsum(step_turns)
        moves = step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
        return np.vstack([start, start + np.cumsum(moves, axis=0)])

    def render(step: float) -> tuple[np.ndarray, np.ndarray]:
        trunk = walk(np.zeros(2), heading, turns, step)
        trunk -= trunk.mean(axis=0)
        paths = [(trunk, thickness)]
        for fork, branch_turn, branch_turns in branches:
            start_heading = heading + float(np.sum(turns[:fork])) + branch_turn
            paths.append((walk(trunk[fork], start_heading, branch_turns, step), max(1, thickness - 1)))
        return _polyline_shape(paths)

    n_total = n_steps + sum(len(branch_turns) for _, _, branch_turns in branches)
    return render, target / (thickness * n_total)


def _small_hole(rng: np.random.Generator, target: float, side: int) -> tuple[ShapeRenderer, float]:
    """A dark round pit (label 1) inside a bright rim (label 2)."""
    rim_ratio = rng.uniform(0.25, 0.4)
    aspect = rng.uniform(0.85, 1.0)
    tilt = rng.uniform(0, np.pi)
    shift_x, shift_y = rng.uniform(-0.5, 0.5, 2)

    def render(radius: float) -> tuple[np.ndarray, np.ndarray]:
        rim = max(1.0, radius * rim_ratio)
        half = int(np.ceil(radius + rim)) + 2
        rows, cols = _local_grid(half, half)
        u = (cols - shift_x) * np.cos(tilt) + (rows - shift_y) * np.sin(tilt)
        v = -(cols - shift_x) * np.sin(tilt) + (rows - shift_y) * np.cos(tilt)
        distance = np.hypot(u, v / aspect)
        labels = np.where(distance <= radius, 1, np.where(distance <= radius + rim, 2, 0)).astype(np.uint8)
        return labels, np.ones(labels.shape, dtype=np.float32)

    return render, float(np.sqrt(target / np.pi)) / (1 + rim_ratio)


def _small_stain(rng: np.random.Generator, target: float, side: int) -> tuple[ShapeRenderer, float]:
    """A soft, lumpy blob of one colour, denser at its core."""
    roughness = 0.4
    phases = rng.uniform(0, 2 * np.pi, 3)
    aspect = rng.uniform(0.6, 1.0)
    tilt = rng.uniform(0, np.pi)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radial = np.ones_like(angles)
    for harmonic, phase in zip((2, 3, 5), phases, strict=True):
        radial += roughness / harmonic * np.sin(harmonic * angles + phase)

    def render(radius: float) -> tuple[np.ndarray, np.ndarray]:
        local_x = radius * radial * np.cos(angles)
        local_y = radius * radial * np.sin(angles) * aspect
        x = local_x * np.cos(tilt) - local_y * np.sin(tilt)
        y = local_x * np.sin(tilt) + local_y * np.cos(tilt)
        half = int(np.ceil(max(np.abs(x).max(), np.abs(y).max()))) + 2
        canvas = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.uint8)
        cv2.fillPoly(canvas, [_as_points(np.stack([x + half, y + half], axis=1))], 1, lineType=cv2.LINE_8)
        distance = cv2.distanceTransform(canvas, cv2.DIST_L2, 3)
        core = np.clip(distance / max(radius * 0.5, 1.0), 0, 1)
        return canvas, (0.6 + 0.4 * core).astype(np.float32)

    return render, float(np.sqrt(target / (np.pi * aspect)))


def _small_spots(rng: np.random.Generator, target: float, side: int) -> tuple[ShapeRenderer, float]:
    """A loose cluster of 5-11 small round dark dots."""
    n_dots = int(rng.integers(5, 12))
    offsets = rng.normal(0, 1, size=(n_dots, 2))
    radii = rng.uniform(0.6, 1.4, n_dots)

    def render(unit: float) -> tuple[np.ndarray, np.ndarray]:
        # The cluster spreads over a few dot radii, so the dots stay apart at every size.
        centres = offsets * 3.0 * max(unit, 1.0)
        dot_radii = np.maximum(radii * unit, 0.75)
        half = int(np.ceil(float(np.abs(centres).max() + dot_radii.max()))) + 2
        rows, cols = _local_grid(half, half)
        covered = np.zeros(rows.shape, dtype=bool)
        for (x, y), radius in zip(centres, dot_radii, strict=True):
            covered |= np.hypot(cols - x, rows - y) <= radius
        return covered.astype(np.uint8), np.ones(covered.shape, dtype=np.float32)

    return render, float(np.sqrt(target / (np.pi * float(np.sum(radii**2)))))


# (shape drawer, exponent of area ~ size**exponent, tones of labels 1, 2, ...)
_SMALL_TYPES: dict[str, tuple[ShapeDrawer, float, tuple[_Tone, ...]]] = {
    "scratch": (_small_scratch, 1.0, (_Tone((235.0, 235.0, 240.0), 0.8, +1),)),
    "hole": (_small_hole, 2.0, (_Tone((15.0, 12.0, 10.0), 0.85, -1), _Tone((245.0, 245.0, 240.0), 0.6, +1))),
    "stain": (_small_stain, 2.0, (_Tone((125.0, 70.0, 30.0), 0.8, -1),)),
    "crack": (_small_crack, 1.0, (_Tone((10.0, 10.0, 10.0), 0.85, -1),)),
    "spots": (_small_spots, 2.0, (_Tone((30.0, 35.0, 60.0), 0.8, -1),)),
}
