from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_ncd.data.neu_det import load_neu_det, parse_voc_boxes

from .conftest import NEU_ROOT, needs_neu, write_image, write_voc


def test_voc_boxes_become_zero_based_exclusive_end(tmp_path: Path) -> None:
    path = write_voc(tmp_path / "a.xml", [(1, 1, 4, 3), (10, 5, 25, 30)], width=20, height=16)
    # (1, 1, 4, 3) covers 1-based columns 1..4 and rows 1..3 -> 0-based [0, 4) x [0, 3).
    # The second box is clipped to the 20x16 image.
    assert parse_voc_boxes(path) == [(0, 0, 4, 3), (9, 4, 20, 16)]


def test_voc_without_objects_or_size(tmp_path: Path) -> None:
    path = tmp_path / "b.xml"
    path.write_text(
        "<annotation><object><bndbox><xmin>3.0</xmin><ymin>2</ymin><xmax>5</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>"
    )
    assert parse_voc_boxes(path) == [(2, 1, 5, 9)]
    empty = tmp_path / "c.xml"
    empty.write_text("<annotation></annotation>")
    assert parse_voc_boxes(empty) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object>", "malformed XML"),
        (
            "<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object></annotation>",
            "lacks <ymax>",
        ),
        (
            "<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
            "</annotation>",
            "non-numeric <xmin>",
        ),
        (
            "<annotation><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
            "</annotation>",
            "empty box",
        ),
    ],
)
def test_bad_xml_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad_1.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        parse_voc_boxes(path)
    assert "bad_1.xml" in str(error.value)


def test_loader_types_boxes_and_split(neu_root: Path) -> None:
    table = load_neu_det(neu_root)
    assert table["defect_type"].tolist() == ["pitted_surface", "pitted_surface", "scratches"]
    assert not table["is_normal"].any()
    assert table["mask_path"].isna().all()
    assert (table["split"] == "test").all()
    assert table["boxes"].tolist() == [[(0, 0, 4, 3)], [(1, 1, 5, 5), (9, 9, 20, 16)], [(2, 3, 8, 9)]]
    assert (load_neu_det(neu_root, split="train")["split"] == "train").all()
    with pytest.raises(ValueError, match="split"):
        load_neu_det(neu_root, split="val")


def test_loader_errors(neu_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_neu_det(tmp_path / "nowhere")
    write_image(neu_root / "IMAGES" / "inclusion_3.jpg")
    with pytest.raises(FileNotFoundError, match=r"inclusion_3\.xml"):
        load_neu_det(neu_root)
    (neu_root / "IMAGES" / "inclusion_3.jpg").unlink()
    write_image(neu_root / "IMAGES" / "noindex.jpg")
    with pytest.raises(ValueError, match="noindex"):
        load_neu_det(neu_root)


@pytest.mark.dataset
@needs_neu
def test_real_neu_det() -> None:
    table = load_neu_det(NEU_ROOT)
    assert len(table) == 1800
    assert table["defect_type"].value_counts().to_dict() == dict.fromkeys(
        ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"], 300
    )
    assert table["boxes"].map(len).min() >= 1
    for boxes in table["boxes"]:
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 200
            assert 0 <= y0 < y1 <= 200
