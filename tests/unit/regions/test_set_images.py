"""``SetImages``: a map set's images read from their files one at a time, as a list of them would give."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.regions.extract import SetImages, read_set_image


@pytest.fixture
def map_set(tmp_path: Path) -> AnomalyMapSet:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
        paths.append(str(path))
    return AnomalyMapSet.from_arrays([np.zeros((4, 6), np.float32)] * 3, paths)


def test_the_images_are_those_a_list_would_hold(map_set: AnomalyMapSet) -> None:
    images = SetImages(map_set)
    expected = [read_set_image(map_set, index) for index in range(3)]
    assert len(images) == 3
    assert all(np.array_equal(a, b) for a, b in zip(images, expected, strict=True))
    assert np.array_equal(images[-1], expected[2])
    assert all(np.array_equal(a, b) for a, b in zip(images[1:], expected[1:], strict=True))
    with pytest.raises(IndexError):
        images[3]


def test_each_image_is_read_when_asked_for_not_before(map_set: AnomalyMapSet) -> None:
    images = SetImages(map_set)
    Path(map_set.image_paths[1]).unlink()  # after the sequence was made: nothing was read yet
    assert images[0].shape == (12, 20, 3)
    with pytest.raises((FileNotFoundError, ValueError)):
        images[1]
