from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomalib_ncd.data.masks import boxes_to_mask, has_value, read_row_mask

from .conftest import box_mask, write_image, write_mask


def test_boxes_have_exclusive_ends_and_are_clipped() -> None:
    mask = boxes_to_mask([(1, 2, 4, 3), (8, 8, 30, 30), (5, 5, 5, 9)], (10, 10))
    expected = np.zeros((10, 10), dtype=bool)
    expected[2:3, 1:4] = True
    expected[8:, 8:] = True
    assert np.array_equal(mask, expected)


def test_has_value() -> None:
    assert not has_value(None)
    assert not has_value(float("nan"))
    assert not has_value("")
    assert not has_value([])
    assert has_value("a.png")
    assert has_value([(0, 0, 1, 1)])


def test_row_mask_from_file_box_or_nothing(tmp_path: Path) -> None:
    image = write_image(tmp_path / "i.png", (16, 20))
    mask_file = write_mask(tmp_path / "m.png", box_mask((16, 20), 2, 3, 4, value=200))
    from_file = read_row_mask({"image_path": str(image), "mask_path": str(mask_file), "boxes": None})
    assert from_file.shape == (16, 20)
    assert from_file.sum() == 16
    assert from_file[2:6, 3:7].all()

    from_boxes = read_row_mask({"image_path": str(image), "mask_path": None, "boxes": [(0, 0, 2, 3)]})
    assert from_boxes.sum() == 6
    assert from_boxes[:3, :2].all()

    empty = read_row_mask({"image_path": str(image), "mask_path": None, "boxes": None})
    assert empty.shape == (16, 20)
    assert not empty.any()


def test_row_mask_takes_the_image_size(tmp_path: Path) -> None:
    image = write_image(tmp_path / "i.png", (16, 20))
    small = write_mask(tmp_path / "m.png", box_mask((8, 10), 0, 0, 2))
    mask = read_row_mask({"image_path": str(image), "mask_path": str(small), "boxes": None})
    assert mask.shape == (16, 20)
    assert mask.sum() == 16


def test_row_mask_missing_mask_names_it(tmp_path: Path) -> None:
    image = write_image(tmp_path / "i.png")
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        read_row_mask({"image_path": str(image), "mask_path": str(tmp_path / "gone.png"), "boxes": None})
