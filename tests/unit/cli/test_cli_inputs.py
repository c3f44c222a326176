"""`discover` on bad inputs: one clear line naming the file or the option, and no run folder."""

import cv2
import numpy as np
import pytest

from anomalib_ncd.cli import main
from anomalib_ncd.data.image_io import MIN_IMAGE_SIDE, check_image_sizes
from tests.unit.cli.test_cli_discover import discover_args, one_line_error


def test_check_image_sizes(tmp_path):
    sizes = {"ok.png": (32, 500), "tiny.png": (1, 1), "thin.png": (31, 200)}
    for name, shape in sizes.items():
        cv2.imwrite(str(tmp_path / name), np.zeros(shape, np.uint8))
    check_image_sizes([tmp_path / "ok.png"])
    with pytest.raises(ValueError, match=rf"tiny\.png is 1 x 1 px \(1 more\): .*{MIN_IMAGE_SIDE} px"):
        check_image_sizes([tmp_path / name for name in sizes])


def test_an_image_below_the_minimum_size(dataset_with_maps, tmp_path, capsys):
    data, maps, table = dataset_with_maps
    victim = table[table["defect_type"] == "hole"]["image_path"].iloc[0]
    cv2.imwrite(victim, np.full((1, 1), 200, np.uint8))
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    error = one_line_error(capsys)
    assert victim in error
    assert f"at least {MIN_IMAGE_SIDE} px" in error
    assert not (tmp_path / "out" / "NCD").exists()
