"""A seeded generator of multi-type defect datasets written in the MVTec AD layout.

Written files, for ``category`` under ``root``::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<type>/000.png ...
    <root>/<category>/ground_truth/<type>/000_mask.png ...   (0/255, exactly the changed pixels)
    <root>/<category>/.anomalib_ncd_synthetic.json           (the parameters; marks the folder as ours)

so :func:`anomalib_ncd.data.mvtec.load_mvtec_ad` and anomalib's ``MVTecAD`` datamodule read it.
Categories are in :mod:`anomalib_ncd.data.synthetic_backgrounds`, defect types in
:mod:`anomalib_ncd.data.synthetic_defects`.

Modes (``mode=``):

``default``
    Defects sized by the image's shorter side (a hole's radius is 4-8% of it, a scratch 25-50%
    long...), all eight types of ``DEFECT_TYPES``, always at full contrast. Small grey images by
    default (128 x 128 here, 128 x 176 for the CLI and ``SyntheticDefects``). Its output is unchanged
    since before the modes existed.
``highres_small``
    Small defects on large images: every defect's area is a fraction of the image drawn
    (log-uniformly) from ``defect_area`` (default ``(0.0005, 0.005)``: 0.05-0.5%), a share
    ``faint_share`` (default 0.25) of the defects of every type are faint (low contrast), and the
    types (``SMALL_DEFECT_TYPES``: scratch, hole, stain, crack, spots; the first four by default)
    stay distinguishable at that size by shape and colour: a thin bright line, a black pit in a
    bright rim, a rust-brown blob, a branching black line, a cluster of dark dots. The preset,
    :func:`generate_highres_small`, writes 1024 x 768 (width x height) colour images on the real
    scikit-image textures. It also writes ``defects.csv``: per defect image its type, drawn and
    painted area fractions, faint flag, contrast factor and centre.

Both modes take ``bit_depth=16`` to write 16-bit PNGs (``uint16``; read them with
``cv2.IMREAD_UNCHANGED``): the same rendering on 257 times finer levels, so they use levels an
8-bit image cannot hold, over most of the 16-bit range. Masks stay 8-bit 0/255.
The CLI's built-in set takes the mode and the bit depth as ``anomalib-ncd discover --data
synthetic --synthetic.mode highres_small --synthetic.bit_depth 16`` (see
:mod:`anomalib_ncd.commands.datasets`), and ``SyntheticDefects`` as ``mode`` / ``bit_depth``.

Determinism: every image has its own random generator seeded by ``(seed, split, type, index)``, so
an image depends only on those and the size/colour/mode parameters, not on which other types or
how many images are generated (whether a small defect is faint is a rule on its index, see
:func:`is_faint`). The output is identical across runs and machines with the same NumPy
and OpenCV versions.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import write_mask_file
from anomalib_ncd.data.mvtec import MVTEC_NORMAL_TYPE, load_mvtec_ad
from anomalib_ncd.data.synthetic_backgrounds import CATEGORIES, render_background
from anomalib_ncd.data.synthetic_defects import (
    DEFAULT_DEFECT_AREA,
    DEFAULT_DEFECT_TYPES,
    DEFAULT_SMALL_DEFECT_TYPES,
    DEFECT_TYPES,
    SMALL_DEFECT_TYPES,
    SmallDefect,
    check_defect_area,
    paint_defect,
    paint_small_defect,
)

MARKER_FILE = ".anomalib_ncd_synthetic.json"
DEFECTS_FILE = "defects.csv"
"""Per-image record of the ``highres_small`` mode's defects, in the category folder."""

DEFAULT_MODE: Final = "default"
HIGHRES_SMALL_MODE = "highres_small"
SYNTHETIC_MODES: tuple[str, ...] = (DEFAULT_MODE, HIGHRES_SMALL_MODE)
"""The generator's modes: defects sized by the image's side, or by a fraction of its area."""

MODE_DEFECT_TYPES: dict[str, tuple[str, ...]] = {DEFAULT_MODE: DEFECT_TYPES, HIGHRES_SMALL_MODE: SMALL_DEFECT_TYPES}
"""The defect types each mode can paint."""

HIGHRES_SMALL_SIZE: tuple[int, int] = (768, 1024)
"""``(height, width)`` of the ``highres_small`` preset: 1024 x 768 landscape."""

DEFAULT_FAINT_SHARE = 0.25
"""The share of faint defects in the ``highres_small`` preset."""

BIT_DEPTHS: tuple[int, ...] = (8, 16)
"""The bit depths the generator writes: 8-bit or 16-bit PNG."""


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image with its defect-free version and its mask.

    Attributes:
        clean: the defect-free ``uint8`` (``uint16`` at 16 bits) image, ``(H, W)`` or ``(H, W, 3)`` RGB.
        image: the image with its defect (equal to ``clean`` for normal images).
        mask: ``bool`` ``(H, W)``: exactly the pixels where ``image`` differs from ``clean``.
        defect: what was painted, in the ``highres_small`` mode (``None`` otherwise).
    """

    clean: np.ndarray
    image: np.ndarray
    mask: np.ndarray
    defect: SmallDefect | None = None


def image_rng(seed: int, split: str, defect_type: str, index: int) -> np.random.Generator:
    """Return the random generator of one image (independent of every other image's).

    Args:
        seed: the dataset seed.
        split: ``"train"`` or ``"test"``.
        defect_type: the image's type (``"good"`` for normal images).
        index: the image's number within its folder.

    Returns:
        A NumPy generator seeded by those four values (names through CRC-32, which is stable).
    """
    key = [seed, zlib.crc32(split.encode()), zlib.crc32(defect_type.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_synthetic_image(
    category: str,
    defect_type: str | None,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    *,
    colour: bool = False,
    mode: str = DEFAULT_MODE,
    defect_area: tuple[float, float] = DEFAULT_DEFECT_AREA,
    faint: bool = False,
    bit_depth: int = 8,
) -> SyntheticImage:
    """Render one image of ``category``, with a defect of ``defect_type`` unless it is ``None``.

    Args:
        category: a synthetic category (``brick``, ``grass``, ``gravel``, ``washer``).
        defect_type: a defect type of ``mode``, or ``None`` for a normal image.
        image_size: ``(height, width)``.
        rng: the random generator (consumed).
        colour: RGB when True, grey otherwise.
        mode: ``default`` (defects sized by the image's side) or ``highres_small`` (defects of an
            area fraction drawn from ``defect_area``).
        defect_area: ``highres_small`` only: the range of the defect's area fraction.
        faint: ``highres_small`` only: paint the defect with reduced contrast.
        bit_depth: 8 (``uint8``) or 16 (``uint16``, the same rendering on 257 times finer levels).

    Returns:
        The clean image, the (possibly) defective image and the mask of changed pixels.

    Raises:
        ValueError: on an unknown mode or bit depth.
    """
    _check_mode(mode, bit_depth)
    background = render_background(category, image_size, rng, colour=colour)
    if bit_depth == 8:
        clean = np.clip(np.rint(background.image), 0, 255).astype(np.uint8)
    else:
        # Rendered in float, so the 16-bit image keeps the sub-level detail the 8-bit one rounds away.
        clean = np.clip(np.rint(background.image * np.float32(257)), 0, 65535).astype(np.uint16)
    if defect_type is None:
        return SyntheticImage(clean=clean, image=clean.copy(), mask=np.zeros(image_size, dtype=bool))
    if mode == DEFAULT_MODE:
        image, mask = paint_defect(clean, background.allowed, defect_type, rng)
        return SyntheticImage(clean=clean, image=image, mask=mask)
    image, mask, defect = paint_small_defect(
        clean, background.allowed, defect_type, rng, area_range=defect_area, faint=faint
    )
    return SyntheticImage(clean=clean, image=image, mask=mask, defect=defect)


def is_faint(index: int, faint_share: float) -> bool:
    """Tell whether defect image ``index`` of a type is faint, for a share ``faint_share`` of faint ones.

    A deterministic rule on the index (not a random draw): every prefix of ``n`` images of a type
    holds ``floor(n * faint_share)`` faint ones, spread evenly, and an image still depends only on
    its own index.

    Args:
        index: the image's number within its type's folder.
        faint_share: the share of faint defects, in ``[0, 1]``.

    Returns:
        True for a faint defect.
    """
    return int(np.floor((index + 1) * faint_share + 1e-9)) > int(np.floor(index * faint_share + 1e-9))


def generate_synthetic_dataset(
    root: str | Path,
    category: str = "brick",
    *,
    image_size: int | tuple[int, int] = (128, 128),
    n_train_good: int = 20,
    n_test_good: int = 8,
    n_per_type: int = 8,
    defect_types: tuple[str, ...] | list[str] = DEFAULT_DEFECT_TYPES,
    seed: int = 0,
    colour: bool = False,
    overwrite: bool = True,
    mode: str = DEFAULT_MODE,
    defect_area: tuple[float, float] | None = None,
    faint_share: float | None = None,
    bit_depth: int = 8,
) -> pd.DataFrame:
    """Write a synthetic defect dataset in the MVTec AD layout and return its sample table.

    Args:
        root: the dataset root; the images go to ``<root>/<category>``.
        category: one of ``brick``, ``grass``, ``gravel`` (textures) or ``washer`` (object).
        image_size: ``(height, width)``, or one int for a square; at least 32.
        n_train_good: normal images in ``train/good``.
        n_test_good: normal images in ``test/good``.
        n_per_type: defect images per type.
        defect_types: the types to generate (any of the mode's types,
            :data:`anomalib_ncd.data.synthetic_defects.DEFECT_TYPES` or ``SMALL_DEFECT_TYPES``;
            scratch, hole, stain and crack by default).
        seed: the dataset seed.
        colour: RGB images when True, grey otherwise.
        overwrite: replace a category folder written earlier by this generator. A folder that
            this generator did not write is never deleted.
        mode: ``default`` (defects sized by the image's side) or ``highres_small`` (small defects
            of a drawn area fraction, some faint; see :func:`generate_highres_small` for its preset).
        defect_area: ``highres_small`` only: ``(low, high)`` range of a defect's area fraction;
            ``None``: ``(0.0005, 0.005)``.
        faint_share: ``highres_small`` only: the share of faint (low-contrast) defects of every
            type; ``None``: 0.25.
        bit_depth: 8, or 16 for 16-bit PNG images (masks stay 8-bit 0/255).

    Returns:
        The sample table, as :func:`anomalib_ncd.data.mvtec.load_mvtec_ad` reads it.

    Raises:
        ValueError: on an unknown category, mode or type, duplicate types, negative counts, a tiny
            size, a bad bit depth, or small-defect options outside ``highres_small``.
        FileExistsError: if the category folder exists and is not ours, or ``overwrite`` is False.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    defect_types = tuple(defect_types)
    _check_parameters(category, defect_types, n_train_good, n_test_good, n_per_type, mode, bit_depth)
    area_range, share = _small_options(mode, defect_area, faint_share)
    category_root = Path(root).resolve() / category
    _prepare_folder(category_root, overwrite)

    jobs = [("train", MVTEC_NORMAL_TYPE, n_train_good), ("test", MVTEC_NORMAL_TYPE, n_test_good)]
    jobs += [("test", defect_type, n_per_type) for defect_type in defect_types]
    records = []
    for split, folder_type, count in jobs:
        if count == 0:
            continue
        folder = category_root / split / folder_type
        folder.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(count - 1)))
        is_normal = folder_type == MVTEC_NORMAL_TYPE
        for index in range(count):
            rng = image_rng(seed, split, folder_type, index)
            sample = render_synthetic_image(
                category,
                None if is_normal else folder_type,
                (height, width),
                rng,
                colour=colour,
                mode=mode,
                defect_area=area_range,
                faint=not is_normal and is_faint(index, share),
                bit_depth=bit_depth,
            )
            stem = f"{index:0{digits}d}"
            _write_image(folder / f"{stem}.png", sample.image)
            if not is_normal:
                write_mask_file(category_root / "ground_truth" / folder_type / f"{stem}_mask.png", sample.mask)
            if sample.defect is not None:
                records.append({"image": f"{split}/{folder_type}/{stem}.png", **asdict(sample.defect)})

    if mode != DEFAULT_MODE:
        pd.DataFrame(records).to_csv(category_root / DEFECTS_FILE, index=False)
    parameters = generation_parameters(
        category,
        (height, width),
        n_train_good=n_train_good,
        n_test_good=n_test_good,
        n_per_type=n_per_type,
        defect_types=defect_types,
        seed=seed,
        colour=colour,
        mode=mode,
        defect_area=defect_area,
        faint_share=faint_share,
        bit_depth=bit_depth,
    )
    # Written last: a marker means a complete dataset.
    (category_root / MARKER_FILE).write_text(json.dumps(parameters, indent=2))
    return load_mvtec_ad(root, category)


def generate_highres_small(
    root: str | Path,
    category: str = "brick",
    *,
    image_size: int | tuple[int, int] = HIGHRES_SMALL_SIZE,
    n_train_good: int = 20,
    n_test_good: int = 8,
    n_per_type: int = 8,
    defect_types: tuple[str, ...] | list[str] = DEFAULT_SMALL_DEFECT_TYPES,
    defect_area: tuple[float, float] = DEFAULT_DEFECT_AREA,
    faint_share: float = DEFAULT_FAINT_SHARE,
    bit_depth: int = 8,
    colour: bool = True,
    seed: int = 0,
    overwrite: bool = True,
) -> pd.DataFrame:
    """Write the ``highres_small`` preset: 1024x768 colour images with small defects, some faint.

    The same as :func:`generate_synthetic_dataset` with ``mode="highres_small"`` and the preset's
    defaults; see the module docstring for what each small defect type looks like.

    Args:
        root: the dataset root; the images go to ``<root>/<category>``.
        category: one of ``brick``, ``grass``, ``gravel`` (textures) or ``washer`` (object).
        image_size: ``(height, width)``; 768 x 1024 (landscape) by default.
        n_train_good: normal images in ``train/good``.
        n_test_good: normal images in ``test/good``.
        n_per_type: defect images per type.
        defect_types: any of :data:`anomalib_ncd.data.synthetic_defects.SMALL_DEFECT_TYPES`
            (scratch, hole, stain, crack, spots); the first four by default.
        defect_area: ``(low, high)`` range of a defect's area fraction (0.05% to 0.5% by default).
        faint_share: the share of faint (low-contrast) defects of every type.
        bit_depth: 8, or 16 for 16-bit PNG images.
        colour: RGB images when True, grey otherwise.
        seed: the dataset seed.
        overwrite: replace a category folder written earlier by this generator.

    Returns:
        The sample table, as :func:`anomalib_ncd.data.mvtec.load_mvtec_ad` reads it.
    """
    return generate_synthetic_dataset(
        root,
        category,
        image_size=image_size,
        n_train_good=n_train_good,
        n_test_good=n_test_good,
        n_per_type=n_per_type,
        defect_types=defect_types,
        seed=seed,
        colour=colour,
        overwrite=overwrite,
        mode=HIGHRES_SMALL_MODE,
        defect_area=defect_area,
        faint_share=faint_share,
        bit_depth=bit_depth,
    )


def generation_parameters(
    category: str,
    image_size: tuple[int, int],
    *,
    n_train_good: int,
    n_test_good: int,
    n_per_type: int,
    defect_types: tuple[str, ...] | list[str],
    seed: int,
    colour: bool,
    mode: str = DEFAULT_MODE,
    defect_area: tuple[float, float] | None = None,
    faint_share: float | None = None,
    bit_depth: int = 8,
) -> dict[str, object]:
    """Return the parameters as the generator records them in its marker file.

    The default mode at 8 bits records the same keys as before the modes existed, so folders
    generated then are still recognised; other settings add ``mode`` and ``bit_depth``, and
    ``highres_small`` its ``defect_area`` and ``faint_share`` (defaults filled in).

    Args:
        category: the category.
        image_size: ``(height, width)``.
        n_train_good: normal training images.
        n_test_good: normal test images.
        n_per_type: defect images per type.
        defect_types: the defect types.
        seed: the dataset seed.
        colour: RGB or grey.
        mode: the generator mode.
        defect_area: ``highres_small``'s area range (``None``: the default).
        faint_share: ``highres_small``'s faint share (``None``: the default).
        bit_depth: 8 or 16.

    Returns:
        A JSON-compatible dict (lists, not tuples).
    """
    parameters: dict[str, object] = {
        "category": category,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "n_train_good": n_train_good,
        "n_test_good": n_test_good,
        "n_per_type": n_per_type,
        "defect_types": list(defect_types),
        "seed": seed,
        "colour": colour,
    }
    if mode != DEFAULT_MODE or bit_depth != 8:
        parameters["mode"] = mode
        parameters["bit_depth"] = bit_depth
    if mode == HIGHRES_SMALL_MODE:
        area_range, share = _small_options(mode, defect_area, faint_share)
        parameters["defect_area"] = [float(area_range[0]), float(area_range[1])]
        parameters["faint_share"] = float(share)
    return parameters


def _check_mode(mode: str, bit_depth: int) -> None:
    if mode not in SYNTHETIC_MODES:
        msg = f"unknown synthetic mode {mode!r}; choose from {list(SYNTHETIC_MODES)}"
        raise ValueError(msg)
    if bit_depth not in BIT_DEPTHS:
        msg = f"bit_depth must be one of {list(BIT_DEPTHS)}, got {bit_depth}"
        raise ValueError(msg)


def _small_options(
    mode: str, defect_area: tuple[float, float] | None, faint_share: float | None
) -> tuple[tuple[float, float], float]:
    """Return the small-defect options with their defaults, rejecting them outside ``highres_small``."""
    if mode != HIGHRES_SMALL_MODE:
        if defect_area is not None or faint_share is not None:
            msg = f"defect_area and faint_share apply to mode={HIGHRES_SMALL_MODE!r} only, not {mode!r}"
            raise ValueError(msg)
        return DEFAULT_DEFECT_AREA, 0.0
    area_range = DEFAULT_DEFECT_AREA if defect_area is None else (float(defect_area[0]), float(defect_area[1]))
    check_defect_area(area_range)
    share = DEFAULT_FAINT_SHARE if faint_share is None else float(faint_share)
    if not 0.0 <= share <= 1.0:
        msg = f"faint_share must be in [0, 1], got {faint_share}"
        raise ValueError(msg)
    return area_range, share


def _check_parameters(
    category: str,
    defect_types: tuple[str, ...],
    n_train_good: int,
    n_test_good: int,
    n_per_type: int,
    mode: str,
    bit_depth: int,
) -> None:
    if category not in CATEGORIES:
        msg = f"unknown synthetic category {category!r}; choose from {list(CATEGORIES)}"
        raise ValueError(msg)
    _check_mode(mode, bit_depth)
    known = MODE_DEFECT_TYPES[mode]
    unknown = [defect_type for defect_type in defect_types if defect_type not in known]
    if unknown:
        msg = f"unknown defect types {unknown} in mode {mode!r}; choose from {list(known)}"
        raise ValueError(msg)
    if len(set(defect_types)) != len(defect_types):
        msg = f"defect types repeat: {list(defect_types)}"
        raise ValueError(msg)
    # Every folder must hold an image, or the MVTec readers reject the dataset.
    if n_train_good < 1 or n_test_good < 0 or n_per_type < 1:
        msg = (
            "need n_train_good >= 1, n_test_good >= 0 and n_per_type >= 1, "
            f"got {n_train_good}, {n_test_good}, {n_per_type}"
        )
        raise ValueError(msg)


def _prepare_folder(category_root: Path, overwrite: bool) -> None:
    if not category_root.exists():
        return
    if not (category_root / MARKER_FILE).is_file():
        msg = f"{category_root} exists and was not written by the synthetic generator: not touching it"
        raise FileExistsError(msg)
    if not overwrite:
        msg = f"{category_root} exists; pass overwrite=True to regenerate it"
        raise FileExistsError(msg)
    shutil.rmtree(category_root)


def _write_image(path: Path, image: np.ndarray) -> None:
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        msg = f"cannot write image: {path}"
        raise OSError(msg)
