"""Masks are optional: discovery reads a layout without them; the ground-truth-region mode says it needs them."""

import shutil

import pytest

from anomalib_ncd.cli import main
from anomalib_ncd.commands.datasets import load_dataset
from anomalib_ncd.data import generate_synthetic_dataset
from anomalib_ncd.regions.extract import ground_truth_regions


@pytest.fixture
def unmasked(tmp_path):
    generate_synthetic_dataset(tmp_path / "data", "brick", image_size=64, n_train_good=2, n_test_good=2, n_per_type=1)
    shutil.rmtree(tmp_path / "data" / "brick" / "ground_truth")
    return tmp_path / "data"


def test_mvtec_layout_without_ground_truth_loads(unmasked, tmp_path):
    for data, category in ((unmasked / "brick", None), (unmasked, "brick")):
        table, _, name = load_dataset(str(data), category, tmp_path / "work", seed=0)
        assert name == "brick"
        assert (~table["is_normal"]).sum() == 4
        assert table["mask_path"].isna().all()


def test_ground_truth_regions_need_masks(unmasked, tmp_path):
    table, _, _ = load_dataset(str(unmasked / "brick"), None, tmp_path / "work", seed=0)
    test = table[table["split"] == "test"]
    first_defect = test.loc[~test["is_normal"], "image_path"].iloc[0]
    with pytest.raises(ValueError, match="ground-truth regions need a mask or boxes") as error:
        ground_truth_regions(test)
    assert first_defect in str(error.value)
    assert "4 have none" in str(error.value)


def test_discover_on_saved_maps_without_masks(tmp_path):
    from tests.unit.cli.conftest import SHAPE, write_detector_like_maps
    from tests.unit.cli.test_cli_discover import discover_args

    table = generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=SHAPE, n_train_good=2, n_test_good=3, n_per_type=2, seed=1
    )
    maps = write_detector_like_maps(table, tmp_path / "maps")
    shutil.rmtree(tmp_path / "data" / "brick" / "ground_truth")
    assert main(discover_args(tmp_path / "data" / "brick", maps, tmp_path / "out")) == 0
    assert (tmp_path / "out" / "NCD" / "data" / "brick" / "latest" / "assignments.csv").is_file()


def test_patchcore_trained_on_a_partly_masked_set(tmp_path):
    from tests.unit.cli.test_cli_discover import FAST

    generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=(64, 88), n_train_good=3, n_test_good=2, n_per_type=1, seed=1
    )
    next((tmp_path / "data" / "brick" / "ground_truth").rglob("*.png")).unlink()  # one defect loses its mask
    args = ["discover", "--data", str(tmp_path / "data" / "brick"), "--output", str(tmp_path / "out")]
    assert main([*args, "--detector.image_size", "64", *FAST, "--n_novel_classes", "3"]) == 0
