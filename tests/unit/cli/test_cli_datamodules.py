"""`discover --datamodule <anomalib image datamodule>`: the run works and its config.yaml round-trips."""

import pandas as pd
import yaml

from anomalib_ncd.cli import main
from anomalib_ncd.commands.config import load_arguments, plain
from anomalib_ncd.commands.discover import discover
from tests.unit.cli.test_cli_discover import FAST


def test_enums_become_their_values():
    from anomalib.data.utils import TestSplitMode, ValSplitMode

    assert plain(TestSplitMode.FROM_DIR) == "from_dir"
    assert plain({"mode": ValSplitMode.SAME_AS_TEST}) == {"mode": "same_as_test"}


def _run_and_reload(args, output):
    assert main([*args, "--output", str(output), *FAST]) == 0
    runs = [path for path in (output / "NCD").rglob("v0") if path.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    loaded = load_arguments(discover, run / "config.yaml")
    return run, config, loaded


def test_mvtec_datamodule(dataset_with_maps, tmp_path):
    from anomalib.data import MVTecAD

    data, maps, table = dataset_with_maps
    args = [
        "discover", "--datamodule", "anomalib.data.MVTecAD", "--datamodule.root", str(data.parent),
        "--datamodule.category", "brick", "--detector.maps", str(maps),
    ]  # fmt: skip
    run, config, loaded = _run_and_reload(args, tmp_path / "out")
    assert config["datamodule"]["init_args"]["test_split_mode"] == "from_dir"
    assert isinstance(loaded["datamodule"], MVTecAD)
    assert loaded["datamodule"].category == "brick"
    assignments = pd.read_csv(run / "assignments.csv")
    assert len(assignments) == int((table["split"] == "test").sum())


def test_folder_datamodule(dataset_with_maps, tmp_path):
    from anomalib.data import Folder

    data, maps, table = dataset_with_maps
    defect_types = sorted(set(table.loc[~table["is_normal"], "defect_type"]))
    abnormal = "[" + ", ".join(f"test/{name}" for name in defect_types) + "]"
    args = [
        "discover", "--datamodule", "anomalib.data.Folder", "--datamodule.name", "bricks",
        "--datamodule.root", str(data), "--datamodule.normal_dir", "train/good",
        "--datamodule.abnormal_dir", abnormal, "--datamodule.normal_test_dir", "test/good",
        "--detector.maps", str(maps),
    ]  # fmt: skip
    run, _, loaded = _run_and_reload(args, tmp_path / "out")
    assert isinstance(loaded["datamodule"], Folder)
    assignments = pd.read_csv(run / "assignments.csv")
    assert set(assignments["defect_type"]) == {"good", *defect_types}
