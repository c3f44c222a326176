"""Atomic writes and robust image reading."""

import cv2
import numpy as np
import pytest

from anomalib_ncd.io import atomic_write_path, atomic_write_text, read_image, read_mask


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_read_image_grey_colour_and_errors(tmp_path):
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    rgb = read_image(tmp_path / "c.png")
    assert rgb.shape == (4, 5, 3) and rgb[0, 0, 0] == 255 and rgb[0, 0, 2] == 0
    assert read_image(tmp_path / "c.png", grey=True).shape == (4, 5)
    with pytest.raises(FileNotFoundError, match="none.png"):
        read_image(tmp_path / "none.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ValueError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_read_mask_threshold(tmp_path):
    mask = np.array([[0, 127, 128, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    assert read_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]
