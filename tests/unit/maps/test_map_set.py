"""The anomaly-map container and saved-map folders."""

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.maps.folder import load_map_folder, read_map_file
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError, check_map, working_shape


@pytest.fixture
def images(tmp_path):
    paths = []
    for kind, shape in (("good", (40, 60)), ("crack", (30, 90)), ("hole", (50, 50))):
        folder = tmp_path / "images" / kind
        folder.mkdir(parents=True)
        path = folder / "001.png"
        cv2.imwrite(str(path), np.full(shape, 128, np.uint8))
        paths.append(path)
    return paths


def test_check_map_squeezes_and_converts():
    assert check_map(np.ones((1, 4, 5), np.float64), "x").shape == (4, 5)
    assert check_map(np.ones((4, 5, 1), np.uint8), "x").dtype == np.float32


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((2, 3, 4)), "shape"),
        (np.zeros((0, 4)), "empty"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_check_map_rejects_bad_maps_naming_them(array, message):
    with pytest.raises(MapError, match=message) as error:
        check_map(array, "img_42.png")
    assert "img_42.png" in str(error.value)


def test_set_reads_image_sizes_and_aligns_to_aspect_ratio(images):
    maps = AnomalyMapSet.from_arrays(np.random.default_rng(0).random((3, 16, 16)), images)
    assert maps.image_shapes == [(40, 60), (30, 90), (50, 50)]
    aligned = maps.aligned(long_side=30)
    assert [a.shape for a in aligned] == [(20, 30), (10, 30), (30, 30)]
    assert [a.shape for a in maps.aligned(long_side=None)] == [(40, 60), (30, 90), (50, 50)]


def test_aligned_map_keeps_values_of_a_constant_map(images):
    maps = AnomalyMapSet.from_arrays(np.full((3, 8, 8), 0.25), images)
    for aligned in maps.aligned(long_side=200):
        np.testing.assert_allclose(aligned, 0.25, rtol=1e-6)


def test_working_shape_never_upsamples():
    assert working_shape((10, 20), 256) == (10, 20)
    assert working_shape((1000, 10), 100) == (100, 1)


def test_mismatched_lengths_missing_and_corrupt_images(images, tmp_path):
    with pytest.raises(MapError, match="2 anomaly maps but 3"):
        AnomalyMapSet.from_arrays(np.zeros((2, 4, 4)), images)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        AnomalyMapSet.from_arrays(np.zeros((1, 4, 4)), [tmp_path / "nothere.png"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        AnomalyMapSet.from_arrays(np.zeros((1, 4, 4)), [corrupt])
    with pytest.raises(MapError, match="empty"):
        AnomalyMapSet(maps=[], image_paths=[])


def test_with_samples_joins_types_and_masks(images):
    table = make_sample_table(
        {"image_path": p, "defect_type": p.parent.name, "is_normal": p.parent.name == "good", "split": "test"}
        for p in images
    )
    maps = AnomalyMapSet.from_arrays(np.zeros((3, 4, 4)), images, samples=table)
    assert maps.defect_types == ["good", "crack", "hole"]
    assert maps.is_normal == [True, False, False]
    sub = maps.subset([2, 0])
    assert sub.defect_types == ["hole", "good"] and sub.image_shapes == [(50, 50), (40, 60)]
    with pytest.raises(MapError, match="not in the sample table"):
        maps.with_samples(table.iloc[:1])


def test_read_map_formats(tmp_path):
    value = np.linspace(0, 3, 12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", value)
    tifffile.imwrite(tmp_path / "a.tiff", value)
    cv2.imwrite(str(tmp_path / "a.png"), (value / 3 * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_map_file(tmp_path / "a.npy"), value)
    np.testing.assert_array_equal(read_map_file(tmp_path / "a.tiff"), value)
    np.testing.assert_allclose(read_map_file(tmp_path / "a.png"), value / 3, atol=1 / 255)
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(MapError, match="bad.npy"):
        read_map_file(tmp_path / "bad.npy")
    np.save(tmp_path / "nan.npy", np.array([[np.nan]]))
    with pytest.raises(MapError, match="nan.npy"):
        read_map_file(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_map_file(tmp_path / "missing.npy")


def test_folder_of_png_maps_in_dataset_layout(images, tmp_path):
    # the AnomalyNCD authors' layout: one 8-bit PNG per image, same relative path
    for path in images:
        target = tmp_path / "maps" / path.parent.name / "001.png"
        target.parent.mkdir(parents=True)
        cv2.imwrite(str(target), np.full((16, 16), 200, np.uint8))
    maps = load_map_folder(tmp_path / "maps", images_root=tmp_path / "images")
    assert sorted(maps.image_paths) == sorted(str(p) for p in images)
    assert all(np.allclose(m, 200 / 255) for m in maps.maps)
    table = make_sample_table(
        {"image_path": p, "defect_type": p.parent.name, "is_normal": False, "split": "test"} for p in images
    )
    by_table = load_map_folder(tmp_path / "maps", samples=table)
    assert sorted(by_table.defect_types) == ["crack", "good", "hole"]


def test_folder_errors(images, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_map_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapError, match="no anomaly maps"):
        load_map_folder(tmp_path / "empty", images_root=tmp_path / "images")
    (tmp_path / "maps" / "scratch").mkdir(parents=True)
    np.save(tmp_path / "maps" / "scratch" / "009.npy", np.zeros((4, 4)))
    with pytest.raises(MapError, match="009"):
        load_map_folder(tmp_path / "maps", images_root=tmp_path / "images")


def test_index_folder_roundtrip(images, tmp_path):
    folder = tmp_path / "exported"
    (folder / "maps").mkdir(parents=True)
    rows = []
    for i, path in enumerate(images):
        np.save(folder / "maps" / f"{i}.npy", np.full((5, 5), float(i), np.float32))
        rows.append(
            {
                "map_file": f"maps/{i}.npy",
                "image_path": str(path),
                "image_height": 1,
                "image_width": 2,
                "pred_score": 0.5 * i,
                "gt_label": None,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    maps = load_map_folder(folder)
    assert maps.image_shapes == [(1, 2)] * 3
    assert maps.scores == [0.0, 0.5, 1.0]
    assert [float(m.max()) for m in maps.maps] == [0.0, 1.0, 2.0]
