"""`discover` on bad inputs: one clear line naming the file or the option, and no run folder."""

from pathlib import Path

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


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_image_names_its_file(tmp_path, suffix):
    from anomalib_ncd.data import to_anomalib_datamodule
    from anomalib_ncd.data.image_io import read_image
    from anomalib_ncd.data.samples import make_sample_table

    path = tmp_path / f"cut{suffix}"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    _truncate(path)
    with pytest.raises(ValueError, match=r"truncated.*cut\." + suffix[1:]):
        read_image(path)
    table = make_sample_table([{"image_path": path, "defect_type": "good", "is_normal": True, "split": "test"}])
    datamodule = to_anomalib_datamodule(table)
    datamodule.setup()
    with pytest.raises(ValueError, match=r"cut\." + suffix[1:]):
        datamodule.test_data[0]  # the detector's data path names it too


def test_a_truncated_image_in_discover(dataset_with_maps, tmp_path, capsys):
    data, maps, table = dataset_with_maps
    victim = table[table["defect_type"] == "stain"]["image_path"].iloc[0]
    _truncate(Path(victim))
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert victim in one_line_error(capsys)


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]


@pytest.mark.parametrize("value", ["abc", "2.5", "Auto!"])
def test_a_bad_number_of_classes_says_what_is_allowed(tmp_path, capsys, value):
    assert main(["discover", "--data", str(tmp_path), "--n_novel_classes", value]) == 2
    lines = _error_lines(capsys)
    assert len(lines) <= 2, lines
    assert lines[0] == (
        f"anomalib-ncd: error: --n_novel_classes: {value!r} is not allowed; "
        "give an integer of at least 2 (the classes to discover, normal included) or auto"
    )


def test_other_bad_values_are_one_line_too(tmp_path, capsys):
    assert main(["discover", "--seed", "x"]) == 2
    lines = _error_lines(capsys)
    assert lines[0] == "anomalib-ncd: error: --seed: 'x' is not allowed; give an integer"
    assert len(lines) == 2
    assert "anomalib-ncd discover --help" in lines[1]


def test_output_that_is_a_file(dataset_with_maps, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    for output in (blocker, blocker / "sub"):
        assert main(discover_args(data, maps, output)) == 2
        error = one_line_error(capsys)
        assert f"{blocker} is a file, not a folder; give a folder path" in error


def test_output_without_write_permission(dataset_with_maps, tmp_path, monkeypatch, capsys):
    import anomalib_ncd.results as results

    data, maps, _ = dataset_with_maps
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = results.os.access
    # the tests run as root, for whom every folder is writable: the file system is the boundary
    monkeypatch.setattr(results.os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert main(discover_args(data, maps, locked / "out")) == 2
    error = one_line_error(capsys)
    assert f"cannot write in {locked} (permission denied); give a folder you can write to" in error
    assert not (locked / "out").exists()
