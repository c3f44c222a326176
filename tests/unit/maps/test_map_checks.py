"""Saved maps must fit their images: aspect ratio within a resize's rounding, and one map per image."""

import logging

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.maps.export import INDEX_FILE, save_map_set
from anomalib_ncd.maps.folder import check_map_coverage, load_map_folder
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError


@pytest.mark.parametrize("shape", [(128, 176), (64, 88), (65, 88), (32, 45), (256, 256), (7, 7), (256, 352)])
def test_maps_of_the_image_aspect_or_square_are_accepted(shape):
    AnomalyMapSet.from_arrays([np.zeros(shape)], ["a.png"], image_shapes=[(128, 176)])


@pytest.mark.parametrize("shape", [(20, 300), (176, 128), (64, 92), (100, 88)])
def test_maps_of_another_aspect_are_refused(shape):
    with pytest.raises(MapError, match=r"anomaly map of a\.png is .* but its image is 128 x 176"):
        AnomalyMapSet.from_arrays([np.zeros(shape)], ["a.png"], image_shapes=[(128, 176)])


@pytest.fixture
def saved(tmp_path):
    """Three 128 x 176 images and their maps saved with an index.csv."""
    paths = []
    for number in range(3):
        path = tmp_path / "images" / f"{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((128, 176), 100, np.uint8))
        paths.append(path)
    maps = [np.random.default_rng(n).random((64, 88), dtype=np.float32) for n in range(3)]
    save_map_set(AnomalyMapSet.from_arrays(maps, paths), tmp_path / "maps")
    table = make_sample_table(
        [{"image_path": p, "defect_type": "good", "is_normal": True, "split": "test"} for p in paths]
    )
    return tmp_path / "maps", paths, table


def test_index_map_of_the_wrong_aspect_names_the_image(saved):
    folder, _, table = saved
    index = pd.read_csv(folder / INDEX_FILE)
    np.save(folder / index["map_file"].iloc[1], np.zeros((20, 300), np.float32))
    with pytest.raises(MapError, match=r"1\.png is 20 x 300"):
        load_map_folder(folder, samples=table)


def test_an_image_without_a_map_is_an_error_or_skipped_with_a_count(saved, caplog):
    folder, paths, table = saved
    index = pd.read_csv(folder / INDEX_FILE)
    index[index["image_path"] != str(paths[2])].to_csv(folder / INDEX_FILE, index=False)
    map_set = load_map_folder(folder, samples=table)
    assert check_map_coverage(map_set, table.iloc[:2]) == 0
    with pytest.raises(MapError, match=r"1 of 3 images have no anomaly map \(e\.g\. .*2\.png\)"):
        check_map_coverage(map_set, table)
    with caplog.at_level(logging.WARNING, logger="anomalib_ncd"):
        assert check_map_coverage(map_set, table, skip_missing=True) == 1
    assert "1 of 3 images have no anomaly map" in caplog.text
