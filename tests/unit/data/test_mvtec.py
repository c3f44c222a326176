from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anomalib_ncd.data.mvtec import load_mvtec_ad
from anomalib_ncd.data.samples import SAMPLE_COLUMNS

from .conftest import write_image


def test_reads_splits_types_and_masks(mvtec_root: Path) -> None:
    table = load_mvtec_ad(mvtec_root, "widget")
    assert list(table.columns) == list(SAMPLE_COLUMNS)
    assert table.groupby(["split", "defect_type"]).size().to_dict() == {
        ("test", "dent"): 2,
        ("test", "good"): 2,
        ("train", "good"): 3,
    }
    assert table["is_normal"].tolist() == (table["defect_type"] == "good").tolist()
    dents = table[table["defect_type"] == "dent"]
    for image_path, mask_path in zip(dents["image_path"], dents["mask_path"], strict=True):
        assert Path(image_path).is_absolute()
        assert Path(mask_path).name == f"{Path(image_path).stem}_mask.png"
        assert Path(mask_path).is_file()
    assert table.loc[table["is_normal"], "mask_path"].isna().all()


def test_combined_folder_is_dropped_unless_asked(mvtec_root: Path) -> None:
    assert "combined" not in set(load_mvtec_ad(mvtec_root, "widget")["defect_type"])
    kept = load_mvtec_ad(mvtec_root, "widget", drop_combined=False)
    assert (kept["defect_type"] == "combined").sum() == 1


def test_missing_mask_is_an_error_naming_it(mvtec_root: Path) -> None:
    (mvtec_root / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"001_mask\.png"):
        load_mvtec_ad(mvtec_root, "widget")
    table = load_mvtec_ad(mvtec_root, "widget", require_masks=False)
    assert table["mask_path"].isna().sum() == 6
    assert table.loc[table["defect_type"] == "dent", "mask_path"].tolist()[1] is None


def test_plain_mask_name_is_accepted(mvtec_root: Path) -> None:
    folder = mvtec_root / "widget" / "ground_truth" / "dent"
    (folder / "000_mask.png").rename(folder / "000.png")
    table = load_mvtec_ad(mvtec_root, "widget")
    assert Path(table.loc[table["defect_type"] == "dent", "mask_path"].iloc[0]).name == "000.png"


def test_errors_name_the_path(mvtec_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        load_mvtec_ad(tmp_path / "nope", "widget")
    with pytest.raises(FileNotFoundError, match="other"):
        load_mvtec_ad(mvtec_root, "other")
    (mvtec_root / "widget" / "test" / "empty_type").mkdir()
    with pytest.raises(ValueError, match="empty_type"):
        load_mvtec_ad(mvtec_root, "widget")


def test_empty_train_folder_is_an_error(mvtec_root: Path) -> None:
    shutil.rmtree(mvtec_root / "widget" / "train" / "good")
    (mvtec_root / "widget" / "train" / "good").mkdir()
    with pytest.raises(ValueError, match="good"):
        load_mvtec_ad(mvtec_root, "widget")


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    def build(root: Path, order: list[int]) -> list[str]:
        for index in order:
            write_image(root / "c" / "train" / "good" / f"{index}.png")
        (root / "c" / "test").mkdir()
        return [Path(p).name for p in load_mvtec_ad(root, "c")["image_path"]]

    assert build(tmp_path / "a", [0, 1, 2, 3]) == build(tmp_path / "b", [3, 1, 0, 2])
