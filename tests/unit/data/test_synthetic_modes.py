"""The synthetic generator's modes: the default mode unchanged, and the high-resolution small-defect mode."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.data.image_io import read_mask_file
from anomalib_ncd.data.synthetic import (
    DEFECTS_FILE,
    MARKER_FILE,
    generate_highres_small,
    generate_synthetic_dataset,
    image_rng,
    is_faint,
    render_synthetic_image,
)
from anomalib_ncd.data.synthetic_backgrounds import render_background
from anomalib_ncd.data.synthetic_defects import (
    DEFAULT_SMALL_DEFECT_TYPES,
    DEFECT_TYPES,
    FAINT_MIN_DELTA,
    SMALL_DEFECT_TYPES,
)

HIGHRES = (768, 1024)


def pixel_digest(folder: Path) -> str:
    """SHA-256 of every PNG's path, shape, dtype and decoded pixels (independent of PNG compression)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(str(pixels.shape).encode() + str(pixels.dtype).encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


# Computed with the generator as it was before the modes existed (commit 7be8040), so any change to
# what the default mode writes fails here.
DEFAULT_MODE_DIGESTS = {
    "brick_default": (
        {"category": "brick", "n_train_good": 2, "n_test_good": 1, "n_per_type": 2},
        "ee5060439bb11472096bf27d0cb30b73a87db4810e482b2531f47824724931b8",
    ),
    "washer_colour_all": (
        {
            "category": "washer",
            "image_size": (128, 176),
            "defect_types": DEFECT_TYPES,
            "n_train_good": 1,
            "n_test_good": 1,
            "n_per_type": 1,
            "seed": 3,
            "colour": True,
        },
        "e6636abcd950433a77524cab74bec389fbbe93da152608f32e25a7bed69d4354",
    ),
    "grass_colour_all": (
        {
            "category": "grass",
            "image_size": (64, 96),
            "defect_types": DEFECT_TYPES,
            "n_train_good": 1,
            "n_test_good": 0,
            "n_per_type": 1,
            "seed": 7,
            "colour": True,
        },
        "e17792ef09eddd14d6f977ae61253d8bd649a709698b41d28b46aca8f7d6f77c",
    ),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_MODE_DIGESTS))
def test_default_mode_is_unchanged(tmp_path: Path, case: str) -> None:
    arguments, expected = DEFAULT_MODE_DIGESTS[case]
    generate_synthetic_dataset(tmp_path, **arguments)
    assert pixel_digest(tmp_path / arguments["category"]) == expected


def changed_pixels(sample_image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    changed = sample_image != clean
    return changed.any(axis=-1) if changed.ndim == 3 else changed


def largest_change(sample_image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    delta = np.abs(sample_image.astype(np.int64) - clean.astype(np.int64))
    return delta.max(axis=-1) if delta.ndim == 3 else delta


def render_small(defect_type: str, index: int, **options: object) -> object:
    size = options.pop("image_size", HIGHRES)
    category = options.pop("category", "brick")
    rng = image_rng(0, "test", defect_type, index)
    return render_synthetic_image(
        category, defect_type, size, rng, mode="highres_small", colour=options.pop("colour", True), **options
    )


@pytest.fixture(scope="module")
def highres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ``highres_small`` set: every small type, 4 images each, half of them faint."""
    root = tmp_path_factory.mktemp("highres")
    generate_highres_small(
        root, n_train_good=1, n_test_good=1, n_per_type=4, defect_types=SMALL_DEFECT_TYPES, faint_share=0.5, seed=2
    )
    return root / "brick"


def test_highres_small_sizes_aspect_and_layout(highres: Path) -> None:
    images = sorted(path for path in highres.glob("*/*/*.png") if path.parts[-3] != "ground_truth")
    assert len(images) == 1 + 1 + 4 * len(SMALL_DEFECT_TYPES)
    for path in images:
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert pixels.shape == (768, 1024, 3)
        assert pixels.dtype == np.uint8
    assert sorted(p.name for p in (highres / "ground_truth").iterdir()) == sorted(SMALL_DEFECT_TYPES)
    marker = json.loads((highres / MARKER_FILE).read_text())
    assert marker["mode"] == "highres_small"
    assert marker["image_size"] == [768, 1024]
    assert marker["defect_area"] == [0.0005, 0.005]
    assert marker["faint_share"] == 0.5
    assert marker["bit_depth"] == 8
    assert marker["colour"] is True


def test_highres_small_record_matches_the_masks(highres: Path) -> None:
    records = pd.read_csv(highres / DEFECTS_FILE)
    assert len(records) == 4 * len(SMALL_DEFECT_TYPES)
    for row in records.itertuples():
        path = Path(row.image)
        mask = read_mask_file(highres / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")
        assert row.defect_type == path.parent.name
        assert row.area == pytest.approx(mask.mean())
        assert 0.0005 <= mask.mean() <= 0.005
        assert bool(row.faint) == is_faint(int(path.stem), 0.5)
        assert mask[row.y, row.x] or mask[max(row.y - 40, 0) : row.y + 40, max(row.x - 40, 0) : row.x + 40].any()
    assert records["faint"].sum() == 2 * len(SMALL_DEFECT_TYPES)


def test_highres_small_is_deterministic(highres: Path, tmp_path: Path) -> None:
    arguments = {"n_train_good": 1, "n_test_good": 1, "n_per_type": 4, "defect_types": SMALL_DEFECT_TYPES}
    generate_highres_small(tmp_path / "same", faint_share=0.5, seed=2, **arguments)
    generate_highres_small(tmp_path / "other", faint_share=0.5, seed=3, **arguments)
    same, other = folder_bytes(tmp_path / "same" / "brick"), folder_bytes(tmp_path / "other" / "brick")
    assert same == folder_bytes(highres)
    assert same.keys() == other.keys()
    assert same["test/crack/000.png"] != other["test/crack/000.png"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("defect_type", SMALL_DEFECT_TYPES)
@pytest.mark.parametrize("area", [(0.0005, 0.005), (0.002, 0.0025)])
def test_area_fraction_is_drawn_from_the_range(defect_type: str, area: tuple[float, float]) -> None:
    fractions = []
    for index in range(3):
        for faint in (False, True):
            sample = render_small(defect_type, index, defect_area=area, faint=faint)
            fraction = sample.mask.mean()
            assert area[0] <= fraction <= area[1]
            assert sample.defect.area == pytest.approx(fraction)
            assert abs(fraction - sample.defect.target_area) <= 0.1 * sample.defect.target_area
            if not faint:  # a faint twin draws the same area
                fractions.append(fraction)
    assert len(set(fractions)) == len(fractions)  # drawn per image, not one fixed size


@pytest.mark.parametrize("defect_type", SMALL_DEFECT_TYPES)
@pytest.mark.parametrize(("category", "colour", "bit_depth"), [("gravel", False, 8), ("washer", True, 16)])
def test_small_mask_is_exactly_the_changed_pixels(
    defect_type: str, category: str, colour: bool, bit_depth: int
) -> None:
    scale = 257 if bit_depth == 16 else 1
    for index, faint in ((0, False), (1, True)):
        sample = render_small(
            defect_type,
            index,
            image_size=(192, 256),
            category=category,
            colour=colour,
            faint=faint,
            bit_depth=bit_depth,
        )
        assert np.array_equal(changed_pixels(sample.image, sample.clean), sample.mask)
        assert (
            largest_change(sample.image, sample.clean)[sample.mask].min() >= (FAINT_MIN_DELTA if faint else 30) * scale
        )
        if category == "washer":  # on the ring only
            allowed = render_background("washer", (192, 256), image_rng(0, "test", defect_type, index), colour=colour)
            assert not (sample.mask & ~allowed.allowed).any()


@pytest.mark.parametrize("defect_type", SMALL_DEFECT_TYPES)
def test_faint_defects_have_lower_contrast(defect_type: str) -> None:
    def mean_change(faint: bool) -> float:
        changes = []
        for index in range(3):
            sample = render_small(defect_type, index, image_size=(384, 512), faint=faint)
            changes.append(largest_change(sample.image, sample.clean)[sample.mask].mean())
            assert (sample.defect.contrast < 0.4) == faint
        return float(np.mean(changes))

    assert mean_change(faint=True) < 0.5 * mean_change(faint=False)


def test_faint_share_is_exact_and_spread() -> None:
    assert [is_faint(index, 0.25) for index in range(8)] == [False, False, False, True] * 2
    assert sum(is_faint(index, 0.3) for index in range(100)) == 30
    assert not any(is_faint(index, 0.0) for index in range(20))
    assert all(is_faint(index, 1.0) for index in range(20))


def test_sixteen_bit_output_uses_the_full_range(tmp_path: Path) -> None:
    arguments = {"n_train_good": 1, "n_test_good": 0, "n_per_type": 1, "defect_types": ["hole", "stain"], "seed": 5}
    generate_highres_small(tmp_path / "16", bit_depth=16, **arguments)
    generate_highres_small(tmp_path / "8", bit_depth=8, **arguments)
    for name in ("train/good/000", "test/hole/000", "test/stain/000"):
        deep = cv2.imread(str(tmp_path / "16" / "brick" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        shallow = cv2.imread(str(tmp_path / "8" / "brick" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert deep.dtype == np.uint16
        assert deep.shape == (768, 1024, 3)
        # Spread over the 16-bit range, on levels 8 bits cannot hold (not multiples of 257).
        assert deep.max() > 50000
        assert deep.min() < 15000
        assert len(np.unique(deep)) > 1024
        assert np.mean(deep % 257 != 0) > 0.9
        # The same rendering and the same mask as the 8-bit image, on finer levels. In the defect
        # the two may differ where one depth pushed a pixel to the minimum change and the other not.
        mask = np.zeros(deep.shape[:2], dtype=bool)
        if "good" not in name:
            split_type, stem = name.removeprefix("test/").split("/")
            mask = read_mask_file(tmp_path / "16" / "brick" / "ground_truth" / split_type / f"{stem}_mask.png")
            same = read_mask_file(tmp_path / "8" / "brick" / "ground_truth" / split_type / f"{stem}_mask.png")
            assert np.array_equal(mask, same)
            assert mask.any()
            assert np.median(np.abs(deep / 257.0 - shallow)[mask]) <= 1.0
        assert np.abs(deep / 257.0 - shallow)[~mask].max() <= 1.0
    marker = json.loads((tmp_path / "16" / "brick" / MARKER_FILE).read_text())
    assert marker["bit_depth"] == 16


def test_sixteen_bit_default_mode(tmp_path: Path) -> None:
    table = generate_synthetic_dataset(
        tmp_path, "washer", image_size=(64, 96), n_train_good=1, n_test_good=0, n_per_type=1, bit_depth=16
    )
    for row in table.itertuples():
        pixels = cv2.imread(row.image_path, cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == np.uint16
        assert pixels.shape == (64, 96)
    for defect_type in DEFECT_TYPES:
        sample = render_synthetic_image(
            "brick", defect_type, (64, 96), image_rng(0, "test", defect_type, 0), colour=True, bit_depth=16
        )
        assert np.array_equal(changed_pixels(sample.image, sample.clean), sample.mask)
        assert largest_change(sample.image, sample.clean)[sample.mask].min() >= 30 * 257
    marker = json.loads((tmp_path / "washer" / MARKER_FILE).read_text())
    assert (marker["mode"], marker["bit_depth"]) == ("default", 16)
    assert "defect_area" not in marker
    assert not (tmp_path / "washer" / DEFECTS_FILE).exists()


def test_default_mode_marker_keeps_its_keys(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, "brick", image_size=48, n_train_good=1, n_test_good=0, n_per_type=1)
    marker = json.loads((tmp_path / "brick" / MARKER_FILE).read_text())
    assert sorted(marker) == sorted(
        ["category", "image_size", "n_train_good", "n_test_good", "n_per_type", "defect_types", "seed", "colour"]
    )


def test_highres_small_default_types_are_four_distinct_ones() -> None:
    assert len(DEFAULT_SMALL_DEFECT_TYPES) == 4
    assert set(DEFAULT_SMALL_DEFECT_TYPES) <= set(SMALL_DEFECT_TYPES)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"mode": "huge"}, "unknown synthetic mode"),
        ({"bit_depth": 12}, "bit_depth"),
        ({"defect_area": (0.001, 0.002)}, "apply to mode='highres_small' only"),
        ({"faint_share": 0.5}, "apply to mode='highres_small' only"),
        ({"mode": "highres_small", "defect_area": (0.002, 0.001)}, "defect_area"),
        ({"mode": "highres_small", "defect_area": (0.0, 0.001)}, "defect_area"),
        ({"mode": "highres_small", "defect_area": (0.01, 0.2)}, "defect_area"),
        ({"mode": "highres_small", "faint_share": 1.5}, "faint_share"),
        ({"mode": "highres_small", "defect_types": ["scuff"]}, "scuff"),
    ],
)
def test_bad_mode_parameters(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_synthetic_dataset(tmp_path, "brick", **arguments)
    assert not (tmp_path / "brick").exists()  # rejected before anything is written


def test_datamodule_takes_the_mode_preset_and_reuses_its_data(tmp_path: Path) -> None:
    from anomalib_ncd.data import SyntheticDefects

    preset = SyntheticDefects(tmp_path / "preset", mode="highres_small")
    assert preset.generated_size == (768, 1024)
    assert preset.colour is True
    assert preset.defect_types == DEFAULT_SMALL_DEFECT_TYPES
    default = SyntheticDefects(tmp_path / "default")
    assert (default.generated_size, default.colour, default.mode) == ((128, 176), False, "default")

    small = {"image_size": (96, 128), "n_per_type": 1, "n_train_good": 1, "n_test_good": 1, "mode": "highres_small"}
    datamodule = SyntheticDefects(tmp_path / "s", faint_share=1.0, bit_depth=16, **small)
    datamodule.prepare_data()
    marker = json.loads((tmp_path / "s" / "brick" / MARKER_FILE).read_text())
    assert marker == datamodule.generation_parameters()
    assert (marker["faint_share"], marker["bit_depth"]) == (1.0, 16)
    assert SyntheticDefects(tmp_path / "s", faint_share=1.0, bit_depth=16, **small).is_generated()
    assert not SyntheticDefects(tmp_path / "s", faint_share=0.5, bit_depth=16, **small).is_generated()
    assert not SyntheticDefects(tmp_path / "s", faint_share=1.0, **small).is_generated()
    records = pd.read_csv(tmp_path / "s" / "brick" / DEFECTS_FILE)
    assert records["faint"].all()
    image = cv2.imread(str(tmp_path / "s" / "brick" / "test" / "hole" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert (image.dtype, image.shape) == (np.uint16, (96, 128, 3))
