"""The synthetic generator's modes: the default mode unchanged, and the high-resolution small-defect mode."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalib_ncd.data.synthetic import generate_synthetic_dataset
from anomalib_ncd.data.synthetic_defects import DEFECT_TYPES


def pixel_digest(folder: Path) -> str:
    """SHA-256 of every PNG's path, shape, dtype and decoded pixels (independent of PNG compression)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(str(pixels.shape).encode() + str(pixels.dtype).encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


# Computed with the generator as it was before the modes existed (commit 7be8040), so any change to
# what the default mode writes fails here.
DEFAULT_MODE_DIGESTS = {
    "brick_default": (
        {"category": "brick", "n_train_good": 2, "n_test_good": 1, "n_per_type": 2},
        "ee5060439bb11472096bf27d0cb30b73a87db4810e482b2531f47824724931b8",
    ),
    "washer_colour_all": (
        {
            "category": "washer",
            "image_size": (128, 176),
            "defect_types": DEFECT_TYPES,
            "n_train_good": 1,
            "n_test_good": 1,
            "n_per_type": 1,
            "seed": 3,
            "colour": True,
        },
        "e6636abcd950433a77524cab74bec389fbbe93da152608f32e25a7bed69d4354",
    ),
    "grass_colour_all": (
        {
            "category": "grass",
            "image_size": (64, 96),
            "defect_types": DEFECT_TYPES,
            "n_train_good": 1,
            "n_test_good": 0,
            "n_per_type": 1,
            "seed": 7,
            "colour": True,
        },
        "e17792ef09eddd14d6f977ae61253d8bd649a709698b41d28b46aca8f7d6f77c",
    ),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_MODE_DIGESTS))
def test_default_mode_is_unchanged(tmp_path: Path, case: str) -> None:
    arguments, expected = DEFAULT_MODE_DIGESTS[case]
    generate_synthetic_dataset(tmp_path, **arguments)
    assert pixel_digest(tmp_path / arguments["category"]) == expected
