from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomalib_ncd.data.image_io import list_images, read_image, read_image_size, read_mask_file, write_mask_file

from .conftest import write_image, write_mask


def test_list_images_sorts_filters_and_ignores_case(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.TIFF", ".hidden.png", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [path.name for path in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.TIFF", "d.jpeg"]


def test_list_images_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert list_images(tmp_path / "empty") == []
    with pytest.raises(ValueError, match="empty"):
        list_images(tmp_path / "empty", require_any=True)


def test_read_image_grey_and_colour(tmp_path: Path) -> None:
    grey_path = write_image(tmp_path / "g.png", (5, 7), value=90)
    assert read_image(grey_path).shape == (5, 7, 3)
    assert read_image(grey_path, colour=False).shape == (5, 7)
    colour = np.zeros((4, 6, 3), dtype=np.uint8)
    colour[..., 2] = 200  # red in OpenCV's BGR order
    colour_path = tmp_path / "c.png"
    write_mask(colour_path, colour)
    rgb = read_image(colour_path)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert read_image_size(colour_path) == (4, 6)


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        read_image(corrupt)
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        read_image_size(corrupt)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image_size(tmp_path / "missing.png")


def test_mask_threshold_is_strictly_above_127(tmp_path: Path) -> None:
    values = np.array([[0, 1, 127, 128, 255]], dtype=np.uint8)
    path = write_mask(tmp_path / "m.png", values)
    assert read_mask_file(path).tolist() == [[False, False, False, True, True]]


def test_mask_is_resized_with_nearest_neighbour(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 255
    path = write_mask(tmp_path / "m.png", mask)
    resized = read_mask_file(path, (8, 8))
    assert resized.shape == (8, 8)
    assert resized[:4, :4].all()
    assert resized.sum() == 16


def test_write_mask_file_round_trips(tmp_path: Path) -> None:
    mask = np.zeros((6, 9), dtype=bool)
    mask[1:3, 2:7] = True
    path = write_mask_file(tmp_path / "deep" / "m.png", mask)
    assert np.array_equal(read_mask_file(path), mask)
    assert set(np.unique(read_image(path, colour=False)).tolist()) == {0, 255}
    assert not list((tmp_path / "deep").glob(".*"))
    with pytest.raises(ValueError, match="2-D"):
        write_mask_file(tmp_path / "x.png", np.zeros((2, 2, 3)))
