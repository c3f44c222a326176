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

Determinism: every image has its own random generator seeded by ``(seed, split, type, index)``, so
an image depends only on those and the size/colour parameters, not on which other types or how
many images are generated. The output is identical across runs and machines with the same NumPy
and OpenCV versions.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.data.image_io import write_mask_file
from anomalib_ncd.data.mvtec import MVTEC_NORMAL_TYPE, load_mvtec_ad
from anomalib_ncd.data.synthetic_backgrounds import CATEGORIES, render_background
from anomalib_ncd.data.synthetic_defects import DEFAULT_DEFECT_TYPES, DEFECT_TYPES, paint_defect

MARKER_FILE = ".anomalib_ncd_synthetic.json"


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image with its defect-free version and its mask.

    Attributes:
        clean: the defect-free ``uint8`` image, ``(H, W)`` or ``(H, W, 3)`` RGB.
        image: the image with its defect (equal to ``clean`` for normal images).
        mask: ``bool`` ``(H, W)``: exactly the pixels where ``image`` differs from ``clean``.
    """

    clean: np.ndarray
    image: np.ndarray
    mask: np.ndarray


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
) -> SyntheticImage:
    """Render one image of ``category``, with a defect of ``defect_type`` unless it is ``None``.

    Args:
        category: a synthetic category (``brick``, ``grass``, ``gravel``, ``washer``).
        defect_type: a defect type, or ``None`` for a normal image.
        image_size: ``(height, width)``.
        rng: the random generator (consumed).
        colour: RGB when True, grey otherwise.

    Returns:
        The clean image, the (possibly) defective image and the mask of changed pixels.
    """
    background = render_background(category, image_size, rng, colour=colour)
    clean = np.clip(np.rint(background.image), 0, 255).astype(np.uint8)
    if defect_type is None:
        return SyntheticImage(clean=clean, image=clean.copy(), mask=np.zeros(image_size, dtype=bool))
    image, mask = paint_defect(clean, background.allowed, defect_type, rng)
    return SyntheticImage(clean=clean, image=image, mask=mask)


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
) -> pd.DataFrame:
    """Write a synthetic defect dataset in the MVTec AD layout and return its sample table.

    Args:
        root: the dataset root; the images go to ``<root>/<category>``.
        category: one of ``brick``, ``grass``, ``gravel`` (textures) or ``washer`` (object).
        image_size: ``(height, width)``, or one int for a square; at least 32.
        n_train_good: normal images in ``train/good``.
        n_test_good: normal images in ``test/good``.
        n_per_type: defect images per type.
        defect_types: the types to generate (any of
            :data:`anomalib_ncd.data.synthetic_defects.DEFECT_TYPES`; the four first by default).
        seed: the dataset seed.
        colour: RGB images when True, grey otherwise.
        overwrite: replace a category folder written earlier by this generator. A folder that
            this generator did not write is never deleted.

    Returns:
        The sample table, as :func:`anomalib_ncd.data.mvtec.load_mvtec_ad` reads it.

    Raises:
        ValueError: on an unknown category or type, duplicate types, negative counts or a tiny size.
        FileExistsError: if the category folder exists and is not ours, or ``overwrite`` is False.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    defect_types = tuple(defect_types)
    _check_parameters(category, defect_types, n_train_good, n_test_good, n_per_type)
    category_root = Path(root).resolve() / category
    _prepare_folder(category_root, overwrite)

    jobs = [("train", MVTEC_NORMAL_TYPE, n_train_good), ("test", MVTEC_NORMAL_TYPE, n_test_good)]
    jobs += [("test", defect_type, n_per_type) for defect_type in defect_types]
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
                category, None if is_normal else folder_type, (height, width), rng, colour=colour
            )
            stem = f"{index:0{digits}d}"
            _write_image(folder / f"{stem}.png", sample.image)
            if not is_normal:
                write_mask_file(category_root / "ground_truth" / folder_type / f"{stem}_mask.png", sample.mask)

    parameters = {
        "category": category,
        "image_size": [height, width],
        "n_train_good": n_train_good,
        "n_test_good": n_test_good,
        "n_per_type": n_per_type,
        "defect_types": list(defect_types),
        "seed": seed,
        "colour": colour,
    }
    (category_root / MARKER_FILE).write_text(json.dumps(parameters, indent=2))
    return load_mvtec_ad(root, category)


def _check_parameters(
    category: str, defect_types: tuple[str, ...], n_train_good: int, n_test_good: int, n_per_type: int
) -> None:
    if category not in CATEGORIES:
        msg = f"unknown synthetic category {category!r}; choose from {list(CATEGORIES)}"
        raise ValueError(msg)
    unknown = [defect_type for defect_type in defect_types if defect_type not in DEFECT_TYPES]
    if unknown:
        msg = f"unknown defect types {unknown}; choose from {list(DEFECT_TYPES)}"
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
