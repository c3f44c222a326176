"""Review edits as data: renames, merges and moves applied to a run's tables; bad files refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from anomalib_ncd.review import ReviewEdits, ReviewError, apply_review, reviewed_class_names


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    images = pd.DataFrame(
        {
            "image_path": ["a.png", "b.png", "c.png", "d.png"],
            "pred_class": [1, 2, 0, 3],
            "class_name": ["novel_1", "novel_2", "normal", "unknown"],
            "unknown": [False, False, False, True],
        }
    )
    regions = pd.DataFrame(
        {
            "region": [0, 1, 2, 3],
            "image_path": ["a.png", "b.png", "b.png", "d.png"],
            "pred_class": [1, 2, 2, 3],
            "class_name": ["novel_1", "novel_2", "novel_2", "unknown"],
            "unknown": [False, False, False, True],
        }
    )
    return images, regions


def _edits(**fields: object) -> ReviewEdits:
    return ReviewEdits.from_dict({"format": "anomalib-ncd-review", "version": 1, **fields})


def test_rename_merge_and_move() -> None:
    images, regions = _tables()
    edits = _edits(classes={"novel_1": "scratch", "novel_2": "scratch"}, images={"c.png": "stain", "d.png": "scratch"})
    reviewed, reviewed_regions = apply_review(images, regions, edits)
    assert list(reviewed["class_name"]) == ["scratch", "scratch", "stain", "scratch"]
    assert list(reviewed["model_class_name"]) == ["novel_1", "novel_2", "normal", "unknown"]
    assert list(reviewed["review"]) == ["renamed", "renamed", "moved", "moved"]
    assert list(reviewed["unknown"]) == [False, False, False, False]  # moved out of unknown
    assert list(reviewed_regions["class_name"]) == ["scratch", "scratch", "scratch", "scratch"]
    assert list(images["class_name"]) == ["novel_1", "novel_2", "normal", "unknown"]  # inputs untouched


def test_unknown_stays_unless_moved_and_a_move_to_unknown_flags() -> None:
    images, regions = _tables()
    reviewed, reviewed_regions = apply_review(images, regions, _edits(images={"a.png": "unknown"}))
    assert list(reviewed["unknown"]) == [True, False, False, True]
    assert list(reviewed["class_name"]) == ["unknown", "novel_2", "normal", "unknown"]
    assert bool(reviewed_regions.loc[0, "unknown"])


def test_a_region_moves_on_its_own() -> None:
    images, regions = _tables()
    _, reviewed_regions = apply_review(images, regions, _edits(regions={"2": "normal"}))
    assert list(reviewed_regions["class_name"]) == ["novel_1", "novel_2", "normal", "unknown"]
    assert list(reviewed_regions["review"]) == ["", "", "moved", ""]


def test_a_second_review_keeps_the_models_name() -> None:
    images, regions = _tables()
    first, first_regions = apply_review(images, regions, _edits(classes={"novel_1": "scratch"}))
    second, _ = apply_review(first, first_regions, _edits(classes={"scratch": "long scratch"}))
    assert second.loc[0, "class_name"] == "long scratch"
    assert second.loc[0, "model_class_name"] == "novel_1"


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"classes": {"novel_9": "x"}}, "does not have"),
        ({"images": {"z.png": "x"}}, "1 images this run does not have"),
        ({"regions": {"42": "x"}}, "regions this run does not have"),
        ({"classes": {"unknown": "x"}}, "is a flag"),
        ({"classes": {"novel_1": "  "}}, "non-empty"),
        ({"classes": {"novel_1": "a\nb"}}, "printable"),
    ],
)
def test_edits_that_cannot_apply_are_refused(edits: dict, message: str) -> None:
    images, regions = _tables()
    with pytest.raises(ReviewError, match=message):
        apply_review(images, regions, _edits(**edits))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a JSON review"),
        (json.dumps({"classes": {}}), "not an anomalib-ncd review"),
        (json.dumps({"format": "anomalib-ncd-review", "version": 7}), "version 7"),
        (json.dumps({"format": "anomalib-ncd-review", "version": 1, "images": ["a"]}), "must be an object"),
    ],
)
def test_malformed_files_are_refused(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "review.json"
    path.write_text(text)
    with pytest.raises(ReviewError, match=message):
        ReviewEdits.read(path)


def test_round_trip_and_class_names() -> None:
    edits = _edits(run="data/brick/v0", classes={"novel_1": "scratch"}, images={"a.png": "normal"})
    assert ReviewEdits.from_dict(edits.as_dict()) == edits
    assert edits.n_edits == 2
    assert reviewed_class_names(["normal", "novel_1"], edits) == ["normal", "scratch"]
    with pytest.raises(ReviewError, match="does not have"):
        reviewed_class_names(["normal"], edits)
