"""`anomalib-ncd discover / predict / evaluate` in-process on saved maps: layout, resume, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from anomalib_ncd.cli import main
from anomalib_ncd.results import read_run_state

FAST = [
    "--n_novel_classes", "5",
    "--backbone", "mobilenetv2_100.tv_in1k",
    "--training.epochs", "3",
    "--views.n_views", "2",
]  # fmt: skip


def discover_args(data, maps, output, *extra):
    return ["discover", "--data", str(data), "--detector.maps", str(maps), "--output", str(output), *FAST, *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete discover run on saved maps, shared by the read-only tests."""
    from anomalib_ncd.data import generate_synthetic_dataset
    from tests.unit.cli.conftest import SHAPE, write_detector_like_maps

    root = tmp_path_factory.mktemp("discover")
    table = generate_synthetic_dataset(
        root / "data", "brick", image_size=SHAPE, n_train_good=2, n_test_good=3, n_per_type=3, seed=1
    )
    maps = write_detector_like_maps(table, root / "maps")
    torch.set_num_threads(1)
    assert main(discover_args(root / "data" / "brick", maps, root / "out")) == 0
    return {"run": root / "out" / "NCD" / "data" / "brick" / "latest", "root": root, "maps": maps, "table": table}


def test_run_folder_layout(finished_run):
    run = finished_run["run"]
    assert run.is_symlink()
    for name in ("config.yaml", "run.json", "assignments.csv", "regions.csv", "metrics.json", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "weights" / "lightning" / "model.ckpt").is_file()
    assert (run / "maps" / "index.csv").is_file()
    assert (run / "report" / "index.html").is_file()
    state = read_run_state(run)
    assert state["complete"] is True
    assert state["stage"] == "done"
    assert state["detector_checkpoint"] is None  # saved maps: no detector
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.partial"))


def test_assignments_table(finished_run):
    run, table = finished_run["run"], finished_run["table"]
    assignments = pd.read_csv(run / "assignments.csv")
    test = table[table["split"] == "test"]
    assert len(assignments) == len(test)
    expected = {
        "image_path", "pred_class", "class_name", "confidence", "anomaly_score", "n_regions",
        "region_boxes", "region_classes", "region_confidences", "region_scores", "defect_type",
    }  # fmt: skip
    assert expected <= set(assignments.columns)
    assert set(assignments["defect_type"]) == set(test["defect_type"])
    assert assignments["confidence"].between(0, 1).all()
    names = ["normal", "novel_1", "novel_2", "novel_3", "novel_4"]
    assert [names[c] for c in assignments["pred_class"]] == list(assignments["class_name"])
    # every defect image got a region; boxes lie inside the image
    defects = assignments[assignments["defect_type"] != "good"]
    assert (defects["n_regions"] >= 1).all()
    for boxes in defects["region_boxes"]:
        for x0, y0, x1, y1 in json.loads(boxes):
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
    regions = pd.read_csv(run / "regions.csv")
    assert int((~regions["whole_image"]).sum()) == int(assignments["n_regions"].sum())


def test_metrics_and_evaluate_agree(finished_run, capsys):
    run = finished_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"image", "region"}
    assert 0 <= metrics["image"]["nmi"] <= 1
    assert metrics["image"]["n_samples"] == len(pd.read_csv(run / "assignments.csv"))
    out = finished_run["root"] / "eval"
    assert main(["evaluate", "--run", str(run), "--output", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["image"]["nmi"] == pytest.approx(metrics["image"]["nmi"])
    assert again["region"]["f1"] == pytest.approx(metrics["region"]["f1"])
    assert "image: nmi" in capsys.readouterr().out


def test_config_reproduces_the_run_arguments(finished_run, capsys):
    run = finished_run["run"]
    with pytest.raises(SystemExit) as exit_info:
        main(["discover", "-c", str(run / "config.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "n_novel_classes: 5" in printed
    assert "epochs: 3" in printed


def test_predict_on_new_images_with_saved_maps(finished_run, capsys):
    run, root, maps = finished_run["run"], finished_run["root"], finished_run["maps"]
    images = root / "data" / "brick" / "test"
    code = main(["predict", "--run", str(run), "--images", str(images), "--maps", str(maps), "--overlays", "true"])
    assert code == 0
    folder = run / "predictions" / "v0"
    predictions = pd.read_csv(folder / "predictions.csv")
    assignments = pd.read_csv(run / "assignments.csv")
    assert len(predictions) == len(assignments)
    # the training images classified again by the saved model: the same classes
    merged = predictions.merge(assignments, on="image_path", suffixes=("_new", "_fit"))
    assert (merged["pred_class_new"] == merged["pred_class_fit"]).mean() >= 0.9
    records = json.loads((folder / "predictions.json").read_text())
    assert isinstance(records[0]["region_boxes"], list)
    assert len(list((folder / "overlays").glob("*.png"))) == len(predictions)
    assert "images classified" in capsys.readouterr().out


def test_predict_without_maps_or_detector_is_a_clear_error(finished_run, capsys):
    run, root = finished_run["run"], finished_run["root"]
    assert main(["predict", "--run", str(run), "--images", str(root / "data" / "brick" / "test")]) == 2
    assert "give the new images' maps with --maps" in capsys.readouterr().err


def test_interrupted_run_resumes_from_its_checkpoint(dataset_with_maps, tmp_path, monkeypatch, capsys):
    from anomalib.callbacks.checkpoint import ModelCheckpoint

    data, maps, _ = dataset_with_maps
    output = tmp_path / "out"
    saved = ModelCheckpoint.on_train_epoch_end

    def stop_after_first_epoch(self, trainer, module):
        saved(self, trainer, module)
        raise KeyboardInterrupt  # what Ctrl-C does mid-training

    monkeypatch.setattr(ModelCheckpoint, "on_train_epoch_end", stop_after_first_epoch)
    assert main(discover_args(data, maps, output)) == 130
    run = output / "NCD" / "data" / "brick" / "v0"
    assert read_run_state(run)["complete"] is False
    assert not (run.parent / "latest").exists()  # an unfinished run never becomes latest
    checkpoint = torch.load(run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == 0
    captured = capsys.readouterr()
    assert "--resume" in captured.err
    assert "Caching frozen views" in captured.out
    assert (run / "views" / "tokens.json").is_file()  # the frozen views, complete on disk

    monkeypatch.setattr(ModelCheckpoint, "on_train_epoch_end", saved)
    assert main(["discover", "--resume", str(run)]) == 0
    captured = capsys.readouterr()
    assert "Caching frozen views" not in captured.out  # read back, not computed again
    assert not (run / "views").exists()  # removed once the run is done
    assert read_run_state(run)["complete"] is True
    assert (run.parent / "latest").resolve() == run.resolve()
    checkpoint = torch.load(run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == 2  # the three configured epochs, not three more
    assert not (run.parent / "v1").exists()
    assert main(["discover", "--resume", str(run)]) == 0
    assert "already complete" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("anomalib-ncd")]
    assert len(err) == 1, err
    assert err[0].startswith("anomalib-ncd: error:")
    return err[0]


@pytest.fixture
def earlier_run(dataset_with_maps, tmp_path):
    data, maps, _ = dataset_with_maps
    assert main(discover_args(data, maps, tmp_path / "out")) == 0
    latest = tmp_path / "out" / "NCD" / "data" / "brick" / "latest"
    return latest, latest.resolve(), (latest / "assignments.csv").read_bytes()


def assert_intact(earlier):
    latest, target, content = earlier
    assert latest.resolve() == target
    assert (latest / "assignments.csv").read_bytes() == content


def test_wrong_paths(tmp_path, capsys):
    assert main(["discover", "--data", str(tmp_path / "nowhere"), "--n_novel_classes", "3"]) == 2
    assert "nowhere" in one_line_error(capsys)


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["discover", "--data", str(tmp_path / "empty"), "--n_novel_classes", "3"]) == 2
    assert "empty" in one_line_error(capsys)


def test_corrupt_image(dataset_with_maps, earlier_run, tmp_path, capsys):
    data, maps, table = dataset_with_maps
    victim = Path(table[table["defect_type"] == "crack"]["image_path"].iloc[0])
    victim.write_bytes(b"not a png")
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert victim.name in one_line_error(capsys)
    assert_intact(earlier_run)


def test_checkpoint_that_is_not_an_anomalib_model(dataset_with_maps, tmp_path, capsys):
    data, _, _ = dataset_with_maps
    fake = tmp_path / "results" / "Patchcore" / "x" / "weights" / "lightning" / "model.ckpt"
    fake.parent.mkdir(parents=True)
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, fake)
    code = main(["discover", "--data", str(data), "--detector.checkpoint", str(fake), *FAST])
    assert code == 2
    assert "not a checkpoint of an anomalib Patchcore model" in one_line_error(capsys)
    (fake.parent / "junk.ckpt").write_bytes(b"\x00garbage")
    assert main(["discover", "--data", str(data), "--detector.checkpoint", str(fake.parent / "junk.ckpt"), *FAST]) == 2
    assert "junk.ckpt" in one_line_error(capsys)


def test_maps_that_do_not_match_images(dataset_with_maps, earlier_run, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    (maps / "good" / "999.png").write_bytes((maps / "good" / "000.png").read_bytes())
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert "999" in one_line_error(capsys)
    assert_intact(earlier_run)


def test_more_novel_classes_than_regions(dataset_with_maps, earlier_run, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    assert main([*discover_args(data, maps, tmp_path / "out"), "--n_novel_classes", "40"]) == 2
    assert "40 classes to discover but only" in one_line_error(capsys)
    assert_intact(earlier_run)


def test_set_without_anomalies(dataset_with_maps, tmp_path, capsys):
    import cv2

    data, maps, _ = dataset_with_maps
    for path in maps.rglob("*.png"):
        cv2.imwrite(str(path), np.full((96, 128), 7, np.uint8))  # a detector that sees nothing
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert "no anomaly was found" in one_line_error(capsys)


def test_full_disk_on_write(dataset_with_maps, earlier_run, tmp_path, monkeypatch, capsys):
    import errno

    import anomalib_ncd.commands.discover as discover_module

    real = discover_module.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == "assignments.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(discover_module, "atomic_write_text", full_disk)  # the disk is the outside boundary
    data, maps, _ = dataset_with_maps
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert_intact(earlier_run)
    assert not (earlier_run[0].parent / "v1" / "assignments.csv").exists()


def test_subprocess_entry_point(dataset_with_maps, tmp_path):
    data, maps, _ = dataset_with_maps
    script = Path(sys.executable).with_name("anomalib-ncd")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "anomalib_ncd.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, *discover_args(data, maps, tmp_path / "out")], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "report:" in done.stdout
    bad = subprocess.run(
        [*command, "discover", "--data", str(tmp_path / "missing"), "--n_novel_classes", "3"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "anomalib-ncd: error: dataset folder not found" in bad.stderr


def test_missing_checkpoint_leaves_no_run_folder(dataset_with_maps, tmp_path, capsys):
    data, _, _ = dataset_with_maps
    missing = tmp_path / "results" / "Patchcore" / "model.ckpt"
    output = ["--output", str(tmp_path / "o")]
    code = main(["discover", "--data", str(data), "--detector.checkpoint", str(missing), *output, *FAST])
    assert code == 2
    assert "detector checkpoint not found" in one_line_error(capsys)
    assert not (tmp_path / "o" / "NCD").exists()


def test_auto_number_of_classes(dataset_with_maps, tmp_path):
    data, maps, _ = dataset_with_maps
    args = [*discover_args(data, maps, tmp_path / "out"), "--n_novel_classes", "auto", "--class_count.k_max", "4"]
    assert main(args) == 0
    run = tmp_path / "out" / "NCD" / "data" / "brick" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    estimate = summary["class_count"]
    assert estimate["candidates"] == [2, 3, 4]
    assert estimate["n_classes"] == estimate["candidates"][int(np.argmax(estimate["scores"]))]
    assert len(summary["classes"]) == estimate["n_classes"]
    assert (run / "report" / "class_count.png").is_file()
    checkpoint = torch.load(run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["n_novel_classes"] == estimate["n_classes"]


def test_object_prior_from_the_command_line(dataset_with_maps, tmp_path):
    data, maps, _ = dataset_with_maps
    args = [
        *discover_args(data, maps, tmp_path / "out"),
        "--object_prior.kind", "foreground",
        "--object_prior.drop_outside", "true",
    ]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "out" / "NCD" / "data" / "brick" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["settings"]["object_prior"]["kind"] == "foreground"
    assert summary["settings"]["object_prior"]["drop_outside"] is True
    checkpoint = torch.load(run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["object_prior"]["kind"] == "foreground"
    # predict rebuilds the same prior from the checkpoint
    assert main(["predict", "--run", str(run), "--images", str(data / "test"), "--maps", str(maps)]) == 0


def test_grounded_sam_without_weights_fails_before_a_run_folder(dataset_with_maps, tmp_path, capsys):
    data, maps, _ = dataset_with_maps
    args = [*discover_args(data, maps, tmp_path / "o"), "--object_prior.kind", "grounded_sam"]
    assert main(args) == 2
    error = one_line_error(capsys)
    assert "sam_checkpoint" in error
    assert not (tmp_path / "o" / "NCD").exists()


def test_knn_unknown_score_from_the_command_line(dataset_with_maps, tmp_path):
    """`--novelty.score knn`: the bank is in the checkpoint, `predict` rejects with it, the tables say so."""
    data, maps, _ = dataset_with_maps
    args = [*discover_args(data, maps, tmp_path / "out"), "--novelty.score", "knn", "--novelty.quantile", "0.3"]
    assert main(args) == 0
    run = tmp_path / "out" / "NCD" / "data" / "brick" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["settings"]["novelty"]["score"] == "knn"
    checkpoint = torch.load(run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    bank = checkpoint["state_dict"]["novelty_bank"]
    assignments = pd.read_csv(run / "assignments.csv")
    regions = pd.read_csv(run / "regions.csv")
    # the bank holds the regions that stand for an anomaly: not the soft ones the detector calls normal
    no_anomaly = regions["whole_image"] | ((regions["source"] == "soft") & ~(regions["anomalous_probability"] >= 0.5))
    assert bank.shape[0] == int((~no_anomaly).sum())
    assert assignments["unknown"].any()  # 30 % of the training images lie above the image threshold
    assert main(["predict", "--run", str(run), "--images", str(data / "test"), "--maps", str(maps)]) == 0
    predictions = pd.read_csv(run / "predictions" / "v0" / "predictions.csv")
    merged = predictions.merge(assignments, on="image_path", suffixes=("_new", "_fit"))
    assert (merged["unknown_new"] == merged["unknown_fit"]).mean() >= 0.9  # the same images, the same verdicts
