"""A typed folder `root/<type>/*` trains the detector on a seeded share of its normal folder."""

import json
import shutil

import pandas as pd
import pytest

from anomalib_ncd.cli import main
from anomalib_ncd.commands.datasets import load_dataset
from anomalib_ncd.data import generate_synthetic_dataset
from tests.unit.cli.test_cli_discover import FAST, one_line_error


@pytest.fixture
def typed_root(tmp_path):
    """`<root>/<type>/*.png`: the synthetic set's images, normal ones in `good/`."""
    table = generate_synthetic_dataset(
        tmp_path / "mvtec", "brick", image_size=(96, 128), n_train_good=4, n_test_good=2, n_per_type=2, seed=1
    )
    root = tmp_path / "typed"
    for number, row in enumerate(table.itertuples()):
        target = root / row.defect_type / f"{number:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.image_path, target)
    return root


def test_share_of_the_normal_folder_is_seeded_and_deterministic(typed_root, tmp_path):
    table, _, _ = load_dataset(str(typed_root), None, tmp_path, seed=0, normal_train_share=0.5)
    train = table[table["split"] == "train"]
    assert len(train) == 3  # half of the 6 normal images
    assert train["is_normal"].all()
    again, _, _ = load_dataset(str(typed_root), None, tmp_path, seed=0, normal_train_share=0.5)
    assert list(again["split"]) == list(table["split"])
    untouched, _, _ = load_dataset(str(typed_root), None, tmp_path, seed=0)
    assert (untouched["split"] == "test").all()


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5])
def test_share_out_of_range(typed_root, tmp_path, share):
    with pytest.raises(ValueError, match="between 0 and 1"):
        load_dataset(str(typed_root), None, tmp_path, seed=0, normal_train_share=share)


def test_share_for_a_layout_with_its_own_split(tmp_path):
    generate_synthetic_dataset(tmp_path / "data", "brick", image_size=64, n_train_good=2, n_test_good=1, n_per_type=1)
    with pytest.raises(ValueError, match="typed folders"):
        load_dataset(str(tmp_path / "data" / "brick"), None, tmp_path, seed=0, normal_train_share=0.5)


def test_no_training_split_says_how_to_get_one(typed_root, tmp_path, capsys):
    assert main(["discover", "--data", str(typed_root), "--output", str(tmp_path / "o"), *FAST]) == 2
    assert "--normal_train_share" in one_line_error(capsys)
    assert not (tmp_path / "o" / "NCD").exists()


def test_discover_trains_the_detector_on_the_share(typed_root, tmp_path):
    output = tmp_path / "out"
    args = ["discover", "--data", str(typed_root), "--normal_train_share", "0.5", "--output", str(output)]
    assert main([*args, "--detector.image_size", "64", *FAST]) == 0
    run = output / "NCD" / "typed" / "all" / "latest"
    assert json.loads((run / "run.json").read_text())["detector_checkpoint"]
    assignments = pd.read_csv(run / "assignments.csv")
    assert len(assignments) == 3 + 8  # the normal images left out of training, and every defect image
