"""Sample tables for the commands from folders and from anomalib datamodules."""

from pathlib import Path

import pytest

from anomalib_ncd.commands.datasets import load_dataset, table_from_datamodule
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
