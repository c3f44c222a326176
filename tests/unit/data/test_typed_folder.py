from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_ncd.data.typed_folder import load_typed_folder

from .conftest import box_mask, write_image, write_mask


@pytest.fixture
def typed_root(tmp_path: Path) -> Path:
    root = tmp_path / "typed"
    for index in range(4):
        write_image(root / "OK" / f"n{index}.bmp")
    write_image(root / "scratch" / "s0.jpg")
    write_image(root / "scratch" / "s1.JPEG")
    write_image(root / "dent" / "d0.png")
    masks = tmp_path / "masks"
    write_mask(masks / "scratch" / "s0_mask.png", box_mask((16, 20), 1, 1, 3))
    write_mask(masks / "scratch" / "s1.png", box_mask((16, 20), 1, 1, 3))
    write_mask(masks / "dent" / "d0_mask.png", box_mask((16, 20), 1, 1, 3))
    return root


def test_types_normals_and_default_split(typed_root: Path) -> None:
    table = load_typed_folder(typed_root)
    assert table["defect_type"].value_counts().to_dict() == {"OK": 4, "scratch": 2, "dent": 1}
    assert table["is_normal"].tolist() == (table["defect_type"] == "OK").tolist()
    assert (table["split"] == "test").all()
    assert table["mask_path"].isna().all()


def test_normal_types_parameter(typed_root: Path) -> None:
    table = load_typed_folder(typed_root, normal_types={"DENT"})
    assert table.loc[table["is_normal"], "defect_type"].unique().tolist() == ["dent"]


def test_masks_and_normal_train_fraction(typed_root: Path) -> None:
    table = load_typed_folder(
        typed_root, mask_root=typed_root.parent / "masks", require_masks=True, normal_train_fraction=0.5, seed=3
    )
    defects = table[~table["is_normal"]]
    assert [Path(p).name for p in defects["mask_path"]] == ["d0_mask.png", "s0_mask.png", "s1.png"]
    assert table.loc[table["split"] == "train", "is_normal"].all()
    assert (table["split"] == "train").sum() == 2


def test_errors(typed_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        load_typed_folder(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no_masks"):
        load_typed_folder(typed_root, mask_root=tmp_path / "no_masks")
    with pytest.raises(ValueError, match="mask_root"):
        load_typed_folder(typed_root, require_masks=True)
    (tmp_path / "masks" / "dent" / "d0_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="d0"):
        load_typed_folder(typed_root, mask_root=tmp_path / "masks", require_masks=True)
    (typed_root / "hollow").mkdir()
    with pytest.raises(ValueError, match="hollow"):
        load_typed_folder(typed_root)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="no type folders"):
        load_typed_folder(tmp_path / "bare")
