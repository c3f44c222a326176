from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from anomalib_ncd.data.image_io import read_image, read_mask_file
from anomalib_ncd.data.mvtec import load_mvtec_ad
from anomalib_ncd.data.synthetic import (
    MARKER_FILE,
    generate_synthetic_dataset,
    image_rng,
    render_synthetic_image,
)
from anomalib_ncd.data.synthetic_backgrounds import CATEGORIES, render_background
from anomalib_ncd.data.synthetic_defects import DEFAULT_DEFECT_TYPES, DEFECT_TYPES, paint_defect


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_mask_is_exactly_the_changed_pixels(category: str, defect_type: str) -> None:
    for colour in (False, True):
        for index in range(2):
            sample = render_synthetic_image(
                category, defect_type, (48, 72), image_rng(5, "test", defect_type, index), colour=colour
            )
            changed = sample.image != sample.clean
            if changed.ndim == 3:
                changed = changed.any(axis=-1)
            assert np.array_equal(changed, sample.mask)
            assert sample.mask.sum() >= 6
            # Visible: every defect pixel moved by >= 30 grey levels in some channel.
            delta = np.abs(sample.image.astype(int) - sample.clean.astype(int))
            delta = delta.max(axis=-1) if delta.ndim == 3 else delta
            assert delta[sample.mask].min() >= 30


def test_object_defects_stay_on_the_object() -> None:
    for defect_type in DEFECT_TYPES:
        for index in range(3):
            rng = image_rng(1, "test", defect_type, index)
            background = render_background("washer", (64, 64), image_rng(1, "test", defect_type, index), colour=False)
            sample = render_synthetic_image("washer", defect_type, (64, 64), rng)
            assert not (sample.mask & ~background.allowed).any()


def test_normal_images_differ_but_are_reproducible() -> None:
    first = render_synthetic_image("brick", None, (40, 40), image_rng(0, "train", "good", 0))
    again = render_synthetic_image("brick", None, (40, 40), image_rng(0, "train", "good", 0))
    other = render_synthetic_image("brick", None, (40, 40), image_rng(0, "train", "good", 1))
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)
    assert not first.mask.any()


def test_layout_types_and_counts(tmp_path: Path) -> None:
    table = generate_synthetic_dataset(tmp_path, "gravel", n_train_good=3, n_test_good=2, n_per_type=2)
    category = tmp_path / "gravel"
    assert sorted(p.name for p in (category / "test").iterdir()) == sorted(["good", *DEFAULT_DEFECT_TYPES])
    assert table.groupby(["split", "defect_type"]).size().to_dict() == {
        ("train", "good"): 3,
        ("test", "good"): 2,
        **{("test", defect_type): 2 for defect_type in DEFAULT_DEFECT_TYPES},
    }
    assert table.equals(load_mvtec_ad(tmp_path, "gravel"))
    assert json.loads((category / MARKER_FILE).read_text())["defect_types"] == list(DEFAULT_DEFECT_TYPES)


def test_written_files_match_the_rendered_images(tmp_path: Path) -> None:
    table = generate_synthetic_dataset(
        tmp_path, "washer", image_size=(40, 56), n_train_good=1, n_test_good=1, n_per_type=2, seed=4, colour=True
    )
    defects = table[~table["is_normal"]]
    for _, row in defects.iterrows():
        index = int(Path(row["image_path"]).stem)
        sample = render_synthetic_image(
            "washer", row["defect_type"], (40, 56), image_rng(4, "test", row["defect_type"], index), colour=True
        )
        assert np.array_equal(read_image(row["image_path"]), sample.image)
        assert np.array_equal(read_mask_file(row["mask_path"]), sample.mask)
    assert read_image(table["image_path"].iloc[0]).shape == (40, 56, 3)


def test_all_eight_types_and_grey_output(tmp_path: Path) -> None:
    table = generate_synthetic_dataset(tmp_path, "grass", image_size=64, defect_types=DEFECT_TYPES, n_per_type=1)
    assert set(table["defect_type"]) == {"good", *DEFECT_TYPES}
    image = read_image(table["image_path"].iloc[0])
    assert np.array_equal(image[..., 0], image[..., 1])


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    arguments = {"n_train_good": 2, "n_test_good": 1, "n_per_type": 2, "image_size": (48, 48)}
    generate_synthetic_dataset(tmp_path / "a", "brick", seed=11, **arguments)
    generate_synthetic_dataset(tmp_path / "b", "brick", seed=11, **arguments)
    generate_synthetic_dataset(tmp_path / "c", "brick", seed=12, **arguments)
    a, b, c = (folder_bytes(tmp_path / name / "brick") for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


def test_image_does_not_depend_on_the_other_types(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "a", "brick", defect_types=["hole"], n_per_type=2, n_train_good=1)
    generate_synthetic_dataset(tmp_path / "b", "brick", defect_types=["scratch", "hole"], n_per_type=2, n_train_good=1)
    hole = Path("brick/test/hole/001.png")
    assert (tmp_path / "a" / hole).read_bytes() == (tmp_path / "b" / hole).read_bytes()


def test_overwrite_only_our_own_folder(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, "brick", n_per_type=1, n_train_good=1, defect_types=["hole", "stain"])
    table = generate_synthetic_dataset(tmp_path, "brick", n_per_type=1, n_train_good=1, defect_types=["cut"])
    assert set(table["defect_type"]) == {"good", "cut"}
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic_dataset(tmp_path, "brick", overwrite=False)
    foreign = tmp_path / "gravel"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written"):
        generate_synthetic_dataset(tmp_path, "gravel")
    assert (foreign / "precious.txt").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"category": "marble"}, "category"),
        ({"defect_types": ["dent"]}, "dent"),
        ({"defect_types": ["hole", "hole"]}, "repeat"),
        ({"n_per_type": 0}, "n_per_type"),
        ({"image_size": 16}, "32"),
    ],
)
def test_bad_parameters(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synthetic_dataset(tmp_path, **{"category": "brick", **arguments})


def test_paint_defect_rejects_bad_input() -> None:
    clean = np.zeros((40, 40), dtype=np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown defect type"):
        paint_defect(clean, np.ones((40, 40), bool), "dent", rng)
    with pytest.raises(ValueError, match="empty"):
        paint_defect(clean, np.zeros((40, 40), bool), "hole", rng)
    tiny = np.zeros((40, 40), bool)
    tiny[0, 0] = True
    with pytest.raises(RuntimeError, match="could not fit"):
        paint_defect(clean, tiny, "scratch", rng)


def test_generation_is_fast(tmp_path: Path) -> None:
    render_background("brick", (64, 64), np.random.default_rng(0), colour=False)  # loads the texture once
    start = time.perf_counter()
    table = generate_synthetic_dataset(tmp_path, "brick", n_train_good=20, n_test_good=8, n_per_type=8)
    assert len(table) == 60
    assert time.perf_counter() - start < 2.0
