from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from anomalib_ncd.data.mtd import load_mtd
from anomalib_ncd.data.splits import select_train_names

from .conftest import MTD_ROOT, make_mtd, needs_mtd


def test_types_split_and_masks(mtd_root: Path) -> None:
    table = load_mtd(mtd_root)
    assert table.groupby(["split", "defect_type"]).size().to_dict() == {
        ("test", "Blowhole"): 3,
        ("test", "Crack"): 2,
        ("test", "Free"): 2,
        ("train", "Free"): 8,
    }
    assert table["is_normal"].tolist() == (table["defect_type"] == "Free").tolist()
    defects = table[~table["is_normal"]]
    for image_path, mask_path in zip(defects["image_path"], defects["mask_path"], strict=True):
        assert Path(mask_path) == Path(image_path).with_suffix(".png")
    assert table.loc[table["is_normal"], "mask_path"].isna().all()
    assert (table.loc[table["split"] == "train", "is_normal"]).all()


def test_split_follows_the_documented_rule(mtd_root: Path) -> None:
    table = load_mtd(mtd_root, train_fraction=0.6, seed=7)
    free = table[table["defect_type"] == "Free"]
    expected = select_train_names([Path(p).name for p in free["image_path"]], 0.6, seed=7)
    assert {Path(p).name for p in free.loc[free["split"] == "train", "image_path"]} == expected
    assert len(expected) == 6


def test_split_is_independent_of_creation_order(tmp_path: Path) -> None:
    forward = load_mtd(make_mtd(tmp_path / "a", {"Free": 12, "Crack": 1}))
    backward = load_mtd(make_mtd(tmp_path / "b", {"Free": 12, "Crack": 1}, order=list(range(11, -1, -1))))

    def train_names(table):
        return {Path(p).name for p in table.loc[table["split"] == "train", "image_path"]}

    assert train_names(forward) == train_names(backward)
    assert [Path(p).name for p in forward["image_path"]] == [Path(p).name for p in backward["image_path"]]


def test_seed_and_fraction_are_parameters(mtd_root: Path) -> None:
    assert (load_mtd(mtd_root, train_fraction=0.0)["split"] == "test").all()
    splits = [tuple(load_mtd(mtd_root, seed=seed)["split"]) for seed in range(4)]
    assert len(set(splits)) > 1


def test_errors(mtd_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing_root"):
        load_mtd(tmp_path / "missing_root")
    (tmp_path / "not_mtd").mkdir()
    with pytest.raises(ValueError, match="MT_"):
        load_mtd(tmp_path / "not_mtd")
    (mtd_root / "MT_Empty" / "Imgs").mkdir(parents=True)
    with pytest.raises(ValueError, match="MT_Empty"):
        load_mtd(mtd_root)


def test_missing_mask_and_missing_free(mtd_root: Path) -> None:
    mask = next((mtd_root / "MT_Crack" / "Imgs").glob("*.png"))
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=mask.name):
        load_mtd(mtd_root)
    assert load_mtd(mtd_root, require_masks=False)["mask_path"].notna().sum() == 4
    for path in (mtd_root / "MT_Free" / "Imgs").iterdir():
        path.unlink()
    (mtd_root / "MT_Free" / "Imgs").rmdir()
    (mtd_root / "MT_Free").rmdir()
    with pytest.raises(ValueError, match="MT_Free"):
        load_mtd(mtd_root, require_masks=False)


@pytest.mark.dataset
@needs_mtd
def test_real_mtd_counts_and_split() -> None:
    table = load_mtd(MTD_ROOT)
    assert table["defect_type"].value_counts().to_dict() == {
        "Free": 952,
        "Blowhole": 115,
        "Uneven": 103,
        "Break": 85,
        "Crack": 57,
        "Fray": 32,
    }
    train = table[table["split"] == "train"]
    assert len(train) == 762
    assert train["is_normal"].all()
    assert len(table) - len(train) == 190 + 392
    assert table["mask_path"].notna().sum() == 392
    # Pins the split itself: any change of the rule or the data shows up here.
    names = "\n".join(sorted(Path(p).name for p in train["image_path"]))
    assert hashlib.sha256(names.encode()).hexdigest() == (
        "12e843548f127dd5b3d796673683265015e02473957408fe8c4ae06be26ef09a"
    )
    assert table.equals(load_mtd(MTD_ROOT))
