"""A failed `discover` leaves no half-made run folder (or a resumable one marked failed); it writes under --output."""

import errno
import json
from pathlib import Path

from anomalib_ncd.cli import main
from anomalib_ncd.results import read_run_state
from tests.unit.cli.test_cli_discover import discover_args, one_line_error


def test_an_error_before_a_checkpoint_leaves_no_run_folder(dataset_with_maps, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    base = tmp_path / "out" / "NCD" / "data" / "brick"
    assert main([*discover_args(data, maps, tmp_path / "out"), "--n_novel_classes", "40"]) == 2  # fails in training
    assert "40 classes to discover" in one_line_error(capsys)
    assert not (tmp_path / "out" / "NCD").exists()  # nor the empty folders above the run
    assert main(discover_args(data, maps, tmp_path / "out")) == 0
    assert (base / "latest").resolve().name == "v0"  # the failed run took no version


def test_an_error_after_a_checkpoint_is_marked_failed_and_resumable(dataset_with_maps, tmp_path, monkeypatch, capsys):
    import anomalib_ncd.commands.discover as discover_module

    real = discover_module.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == "assignments.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(discover_module, "atomic_write_text", full_disk)
    data, maps, _ = dataset_with_maps
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert "No space left on device" in one_line_error(capsys)
    run = tmp_path / "out" / "NCD" / "data" / "brick" / "v0"
    state = read_run_state(run)
    assert state["complete"] is False
    assert "No space left on device" in state["failed"]
    assert not (run.parent / "latest").exists()
    monkeypatch.setattr(discover_module, "atomic_write_text", real)
    assert main(["discover", "--resume", str(run)]) == 0
    assert read_run_state(run)["complete"] is True
    assert read_run_state(run)["failed"] is None


def test_patchcore_trained_here_writes_nothing_outside_the_output(tmp_path, monkeypatch):
    from anomalib_ncd.data import generate_synthetic_dataset
    from tests.unit.cli.test_cli_discover import FAST

    generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=(64, 88), n_train_good=3, n_test_good=2, n_per_type=1, seed=1
    )
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["discover", "--data", str(tmp_path / "data" / "brick"), "--output", "out", "--detector.image_size", "64"]
    assert main([*args, *FAST, "--n_novel_classes", "3"]) == 0
    assert sorted(path.name for path in work.iterdir()) == ["out"]
    run = work / "out" / "NCD" / "data" / "brick" / "latest"
    assert json.loads((run / "run.json").read_text())["detector_checkpoint"].startswith(str(run.resolve()))
    assert not [path for path in run.rglob("*.png") if "images" in path.parts]  # no visualiser output


def test_a_failed_regions_run_leaves_no_run_folder(dataset_with_maps, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    next((maps / "hole").glob("*.png")).unlink()  # an image without its map: fails in the map stage
    assert main(["regions", "--data", str(data), "--maps", str(maps), "--output", str(tmp_path / "o")]) == 2
    error = one_line_error(capsys)
    assert "have no anomaly map" in error
    assert "pass --skip_missing_maps true" in error
    assert not list((tmp_path / "o" / "NCD" / "data" / "brick").glob("v*"))
