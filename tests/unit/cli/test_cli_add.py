"""`anomalib-ncd add`: a new batch added to a finished run, old ids kept, the run itself untouched."""

import json
import shutil

import pandas as pd
import pytest
import torch

from anomalib_ncd.cli import main
from anomalib_ncd.results import read_run_state
from tests.unit.cli.test_cli_discover import discover_args

FIRST_TYPES = ("crack", "hole")
LATER_TYPES = ("scratch", "stain")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A run discovered on good, crack and hole images; scratch and stain come later as a batch."""
    from anomalib_ncd.data import generate_synthetic_dataset
    from tests.unit.cli.conftest import SHAPE, write_detector_like_maps

    root = tmp_path_factory.mktemp("add")
    table = generate_synthetic_dataset(
        root / "data", "brick", image_size=SHAPE, n_train_good=2, n_test_good=3, n_per_type=4, seed=2
    )
    first_maps = write_detector_like_maps(table[~table["defect_type"].isin(LATER_TYPES)], root / "maps_first")
    maps = write_detector_like_maps(table[table["defect_type"].isin(LATER_TYPES)], root / "maps_batch")
    first = root / "first" / "brick"
    typed = [f"{kind}/{name}" for kind in ("test", "ground_truth") for name in FIRST_TYPES]
    for folder in ("train/good", "test/good", *typed):
        shutil.copytree(root / "data" / "brick" / folder, first / folder)
    batch = root / "batch"
    for kind in LATER_TYPES:
        shutil.copytree(root / "data" / "brick" / "test" / kind, batch / kind)
    torch.set_num_threads(1)
    args = discover_args(first, first_maps, root / "out", "--n_novel_classes", "3")
    assert main(args) == 0
    run = (root / "out" / "NCD" / "first" / "brick" / "latest").resolve()
    return {"root": root, "run": run, "maps": maps, "batch": batch}


@pytest.fixture(scope="module")
def added(first_run):
    run, maps, batch = first_run["run"], first_run["maps"], first_run["batch"]
    before = {path.name: path.read_bytes() for path in run.glob("*.csv")}
    code = main(["add", "--run", str(run), "--images", str(batch), "--maps", str(maps), "--n_new_classes", "2"])
    assert code == 0
    new_run = (run.parent / "latest").resolve()
    return {**first_run, "new_run": new_run, "before": before}


def test_add_writes_a_new_version_and_leaves_the_run_alone(added):
    run, new_run = added["run"], added["new_run"]
    assert new_run != run
    assert new_run.parent == run.parent
    assert {path.name: path.read_bytes() for path in run.glob("*.csv")} == added["before"]
    state = read_run_state(new_run)
    assert state["command"] == "add"
    assert state["complete"] is True
    assert state["parent"] == str(run)
    files = ("config.yaml", "assignments.csv", "summary.json", "maps/index.csv", "weights/lightning/model.ckpt")
    for name in (*files, "report/index.html"):
        assert (new_run / name).is_file(), name


def test_old_assignments_keep_their_ids_and_the_batch_follows(added):
    run, new_run = added["run"], added["new_run"]
    old = pd.read_csv(run / "assignments.csv")
    both = pd.read_csv(new_run / "assignments.csv")
    earlier = both[both["batch"] == run.name].reset_index(drop=True)
    pd.testing.assert_frame_equal(earlier.drop(columns="batch"), old, check_dtype=False)
    batch_rows = both[both["batch"] == new_run.name]
    assert len(batch_rows) == len(list(added["batch"].rglob("*.png")))
    summary = json.loads((new_run / "summary.json").read_text())
    # normal, novel_1 and novel_2 before; the two appended kinds follow
    assert summary["new_kind_regions"] >= 4
    assert summary["appended_classes"] == ["novel_3", "novel_4"]
    checkpoint = torch.load(new_run / "weights" / "lightning" / "model.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["n_novel_classes"] == 3 + len(summary["appended_classes"])
    # unknown rejection recalibrated on the earlier and the batch's regions together
    assert torch.isfinite(checkpoint["state_dict"]["unknown_threshold"])
    assert torch.isfinite(checkpoint["state_dict"]["unknown_image_threshold"])
    assert set(batch_rows["class_name"]) <= {"normal", *(f"novel_{k}" for k in range(1, 5))}
    index = pd.read_csv(new_run / "maps" / "index.csv")
    assert len(index) == len(both)


def test_predict_and_add_again_on_the_extended_run(added, capsys):
    new_run, maps, batch = added["new_run"], added["maps"], added["batch"]
    assert main(["predict", "--run", str(new_run), "--images", str(batch), "--maps", str(maps)]) == 0
    predictions = pd.read_csv(new_run / "predictions" / "v0" / "predictions.csv")
    assignments = pd.read_csv(new_run / "assignments.csv")
    merged = predictions.merge(assignments[assignments["batch"] == new_run.name], on="image_path")
    assert len(merged) == len(predictions)
    # the same images again: they fit the classes now, so nothing more is appended
    code = main(["add", "--run", str(new_run), "--images", str(batch), "--maps", str(maps)])
    assert code == 0
    third = (new_run.parent / "latest").resolve()
    assert json.loads((third / "summary.json").read_text())["appended_classes"] == []


def test_add_errors(first_run, tmp_path, capsys):
    run, batch = first_run["run"], first_run["batch"]
    assert main(["add", "--run", str(tmp_path / "nowhere"), "--images", str(batch)]) == 2
    assert main(["add", "--run", str(run), "--images", str(batch)]) == 2  # no detector, no maps
    assert "--maps" in capsys.readouterr().err
    assert main(["add", "--run", str(run), "--images", str(batch), "--n_new_classes", "-1"]) == 2
