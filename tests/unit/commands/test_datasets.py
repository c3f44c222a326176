"""Sample tables for the commands from folders and from anomalib datamodules."""

from pathlib import Path

import pytest

from anomalib_ncd.commands import datasets
from anomalib_ncd.commands.datasets import SyntheticSettings, load_dataset, table_from_datamodule
from anomalib_ncd.data import SyntheticDefects, generate_synthetic_dataset


@pytest.fixture
def synthetic(tmp_path):
    table = generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=64, n_train_good=3, n_test_good=2, n_per_type=2
    )
    return tmp_path / "data", table


def test_anomalib_mvtec_datamodule_gives_types_from_folders(synthetic):
    from anomalib.data import MVTecAD

    root, table = synthetic
    samples, name, category = table_from_datamodule(MVTecAD(root=root, category="brick"))
    assert (name, category) == ("MVTecAD", "brick")
    test = samples[samples["split"] == "test"].sort_values("image_path")
    expected = table[table["split"] == "test"].sort_values("image_path")
    assert list(test["image_path"]) == [str(Path(p).resolve()) for p in expected["image_path"]]
    assert list(test["defect_type"]) == list(expected["defect_type"])
    assert list(test["is_normal"]) == list(expected["is_normal"])
    assert int((samples["split"] == "train").sum()) == 3


def test_our_datamodules_give_their_own_table(tmp_path):
    datamodule = SyntheticDefects(root=tmp_path / "s", image_size=64, n_per_type=2, n_train_good=3, n_test_good=2)
    samples, name, category = table_from_datamodule(datamodule)
    assert category == "brick"
    assert set(samples["defect_type"]) == {"good", "crack", "hole", "scratch", "stain"}
    assert name == datamodule.name


def test_folder_layouts(synthetic):
    root, table = synthetic
    loaded, name, category = load_dataset(str(root / "brick"), None, root, 0)
    assert (name, category) == ("data", "brick")
    assert len(loaded) == len(table)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_dataset(str(root / "nope"), None, root, 0)


def test_built_in_synthetic_presets(tmp_path, monkeypatch):
    calls = []

    def fake_generator(root, category, **arguments):
        calls.append((Path(root), category, arguments))
        return "table"

    monkeypatch.setattr(datasets, "generate_synthetic_dataset", fake_generator)
    assert load_dataset("synthetic", None, tmp_path, 3) == ("table", "synthetic", "brick")
    assert calls[-1] == (tmp_path / "synthetic", "brick", {"seed": 3, "bit_depth": 8, "image_size": (128, 176)})

    settings = SyntheticSettings(mode="highres_small", bit_depth=16)
    assert load_dataset("synthetic", "washer", tmp_path, 0, settings) == (
        "table",
        "synthetic_highres_small_16bit",
        "washer",
    )
    root, category, arguments = calls[-1]
    assert (root, category) == (tmp_path / "synthetic_highres_small_16bit", "washer")
    assert arguments["mode"] == "highres_small"
    assert arguments["image_size"] == (768, 1024)
    assert arguments["colour"] is True
    assert arguments["bit_depth"] == 16
    assert arguments["defect_area"] == (0.0005, 0.005)
    assert len(arguments["defect_types"]) == 4


def test_discover_parses_the_synthetic_mode():
    from jsonargparse import ArgumentParser

    from anomalib_ncd.commands.discover import discover

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(discover, as_positional=False)
    config = parser.instantiate_classes(parser.parse_args(["--synthetic.mode", "highres_small"]))
    assert config.synthetic == SyntheticSettings(mode="highres_small", bit_depth=8)
    assert parser.instantiate_classes(parser.parse_args([])).synthetic == SyntheticSettings()
    with pytest.raises(Exception, match="mode"):
        parser.parse_args(["--synthetic.mode", "huge"])
