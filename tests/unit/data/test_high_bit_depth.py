"""16-bit PNG/TIFF images read as their 8-bit originals, in the detector's data path and in the crops."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule, to_anomalib_datamodule
from anomalib_ncd.data.image_io import read_image, to_uint8
from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.regions.extract import read_set_image


def _rgb(seed: int = 0, shape: tuple[int, int] = (40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def _write_copies(folder: Path, rgb: np.ndarray) -> dict[str, Path]:
    """The same pixels as an 8-bit PNG, a 16-bit PNG and a 16-bit TIFF (value * 257), and grey versions."""
    folder.mkdir(parents=True, exist_ok=True)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    paths = {
        "png8": folder / "a8.png",
        "png16": folder / "a16.png",
        "tif16": folder / "a16.tif",
        "grey8": folder / "g8.png",
        "grey16": folder / "g16.png",
    }
    assert cv2.imwrite(str(paths["png8"]), bgr)
    assert cv2.imwrite(str(paths["png16"]), bgr.astype(np.uint16) * 257)
    tifffile.imwrite(paths["tif16"], rgb.astype(np.uint16) * 257, photometric="rgb")
    assert cv2.imwrite(str(paths["grey8"]), grey)
    assert cv2.imwrite(str(paths["grey16"]), grey.astype(np.uint16) * 257)
    return paths


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_reader_scales_by_the_dtype_range(tmp_path):
    rgb = _rgb()
    paths = _write_copies(tmp_path, rgb)
    assert np.array_equal(read_image(paths["png8"]), rgb)
    assert _close(read_image(paths["png16"]), rgb)
    assert _close(read_image(paths["tif16"]), rgb)
    assert _close(read_image(paths["grey16"], colour=False), read_image(paths["grey8"], colour=False))
    assert _close(read_image(paths["grey16"]), read_image(paths["grey8"]))
    assert read_image(paths["png16"]).dtype == np.uint8


def test_float_and_nan_images(tmp_path):
    assert to_uint8(np.array([[0.0, 0.5, 2.0, -1.0]], np.float32)).tolist() == [[0, 128, 255, 0]]
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([[np.nan]], np.float32), "x.tif")
    dark = np.full((8, 8), 1000, np.uint16)  # a dark 16-bit image stays dark: no stretch to its own range
    assert int(to_uint8(dark).max()) == 4


def _detector_pixels(datamodule, wanted: Path) -> np.ndarray:
    datamodule.setup()
    for dataset in (datamodule.train_data, datamodule.test_data):
        for index in range(len(dataset)):
            item = dataset[index]
            if Path(item.image_path).resolve() == wanted.resolve():
                return (item.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    raise AssertionError(f"{wanted} not in the datamodule")


def test_detector_path_and_crops_see_the_same_pixels(tmp_path):
    rgb = _rgb(1)
    paths = _write_copies(tmp_path / "images", rgb)
    records = [
        {"image_path": paths[name], "defect_type": "good", "is_normal": True, "split": split}
        for name, split in (("png8", "train"), ("png16", "test"), ("tif16", "test"))
    ]
    datamodule = to_anomalib_datamodule(make_sample_table(records))
    map_set = AnomalyMapSet.from_arrays([np.zeros((40, 56))] * 2, [paths["png16"], paths["tif16"]])
    for index, name in enumerate(("png16", "tif16")):
        detector = _detector_pixels(datamodule, paths[name])
        assert _close(detector, rgb), name
        assert _close(read_set_image(map_set, index), detector), name


def test_mvtec_datamodule_reads_16_bit(tmp_path):
    generate_synthetic_dataset(tmp_path, "brick", image_size=(40, 56), n_train_good=2, n_test_good=1, n_per_type=1)
    image = next((tmp_path / "brick" / "test" / "good").glob("*.png"))
    original = read_image(image)
    shutil.copy(image, tmp_path / "original.png")
    bgr = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(image), bgr.astype(np.uint16) * 257)
    assert _close(_detector_pixels(mvtec_datamodule(tmp_path, "brick"), image), original)
