"""Tiny on-disk datasets in each supported layout, and the location of the real shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATASETS = Path(os.environ.get("ANOMALIB_NCD_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))
MTD_ROOT = SHARED_DATASETS / "mtd"
NEU_ROOT = SHARED_DATASETS / "neu-det"

needs_mtd = pytest.mark.skipif(not MTD_ROOT.is_dir(), reason=f"MTD not found at {MTD_ROOT}")
needs_neu = pytest.mark.skipif(not NEU_ROOT.is_dir(), reason=f"NEU-DET not found at {NEU_ROOT}")


def write_image(path: Path, shape: tuple[int, ...] = (16, 20), value: int | None = None, seed: int = 0) -> Path:
    """Write a small image (random unless ``value``) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    else:
        pixels = np.full(shape, value, dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask.astype(np.uint8))
    return path


def box_mask(shape: tuple[int, int], top: int, left: int, size: int, value: int = 255) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + size, left : left + size] = value
    return mask


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """``<root>/widget`` with 3 train/good, 2 test/good, 2 test/dent, 1 test/combined, masks for all defects."""
    category = tmp_path / "mvtec" / "widget"
    for index in range(3):
        write_image(category / "train" / "good" / f"{index:03d}.png", seed=index)
    for index in range(2):
        write_image(category / "test" / "good" / f"{index:03d}.png", seed=10 + index)
    for defect_type, count in (("dent", 2), ("combined", 1)):
        for index in range(count):
            write_image(category / "test" / defect_type / f"{index:03d}.png", seed=20 + index)
            write_mask(category / "ground_truth" / defect_type / f"{index:03d}_mask.png", box_mask((16, 20), 2, 3, 5))
    return tmp_path / "mvtec"


def make_mtd(root: Path, counts: dict[str, int], order: list[int] | None = None) -> Path:
    """Write an MTD-like layout; ``order`` permutes the creation order of the files of each folder."""
    for defect_type, count in counts.items():
        indices = [index for index in order if index < count] if order is not None else list(range(count))
        for index in indices:
            stem = f"exp{index % 3}_num_{1000 + index}"
            write_image(root / f"MT_{defect_type}" / "Imgs" / f"{stem}.jpg", seed=index)
            # Halo values 1..127 around a 255 core: not strictly binary, like the real MTD masks.
            mask = box_mask((16, 20), 3, 3, 8, value=60)
            mask[5:9, 5:9] = 255
            write_mask(root / f"MT_{defect_type}" / "Imgs" / f"{stem}.png", mask if defect_type != "Free" else mask * 0)
    return root


@pytest.fixture
def mtd_root(tmp_path: Path) -> Path:
    return make_mtd(tmp_path / "mtd", {"Free": 10, "Blowhole": 3, "Crack": 2})


VOC_TEMPLATE = """<annotation>
    <filename>{name}.jpg</filename>
    <size><width>{width}</width><height>{height}</height><depth>1</depth></size>
    {objects}
</annotation>"""
VOC_OBJECT = (
    "<object><name>x</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>"
)


def write_voc(path: Path, boxes: list[tuple[int, int, int, int]], width: int = 20, height: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    objects = "\n".join(VOC_OBJECT.format(*box) for box in boxes)
    path.write_text(VOC_TEMPLATE.format(name=path.stem, width=width, height=height, objects=objects))
    return path


@pytest.fixture
def neu_root(tmp_path: Path) -> Path:
    """Two types, ``pitted_surface`` (2 images) and ``scratches`` (1 image), 1-based VOC boxes."""
    root = tmp_path / "neu"
    for name, boxes in (
        ("pitted_surface_1", [(1, 1, 4, 3)]),
        ("pitted_surface_2", [(2, 2, 5, 5), (10, 10, 20, 16)]),
        ("scratches_7", [(3, 4, 8, 9)]),
    ):
        write_image(root / "IMAGES" / f"{name}.jpg")
        write_voc(root / "ANNOTATIONS" / f"{name}.xml", boxes)
    return root
