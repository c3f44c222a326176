"""Views of a region: deterministic augmentation, masks that follow the pixels, evaluation view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_ncd.discovery.views import IMAGENET_MEAN, IMAGENET_STD, ViewMaker, ViewSettings

SMALL = ViewSettings(size=32, resize=40, n_views=2)
# only geometric transforms: pixels keep their values, so the mask can be checked against them
GEOMETRIC = ViewSettings(size=32, resize=40, n_views=2, colour_jitter=0.0, blur_probability=0.0, photometric=False)


def unnormalise(image):
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return image * std + mean


def textured_crop(shape=(50, 60, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def blob_mask(shape=(50, 60)):
    mask = np.zeros(shape, dtype=bool)
    mask[10:30, 15:35] = True
    return mask


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 8, "resize": 16}, "size >= 16"),
        ({"size": 64, "resize": 48}, "resize >= size"),
        ({"n_views": 1}, "n_views"),
    ],
)
def test_view_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewSettings(**kwargs)


def test_shapes_dtypes_and_ranges():
    maker = ViewMaker(SMALL)
    for view in (maker.plain(textured_crop(), blob_mask()), maker.augmented(textured_crop(), blob_mask(), 0, 1)):
        image, mask = view
        assert image.shape == (3, 32, 32)
        assert mask.shape == (32, 32)
        assert image.dtype == mask.dtype == torch.float32
        pixels = unnormalise(image)
        assert pixels.min() >= -1e-5
        assert pixels.max() <= 1 + 1e-5
        assert mask.min() >= 0
        assert mask.max() <= 1
        assert mask.max() > 0


def test_augmented_views_are_a_function_of_their_numbers():
    crop, mask = textured_crop(), blob_mask()
    first, again = ViewMaker(SMALL, seed=3), ViewMaker(SMALL, seed=3)
    a, b = first.augmented(crop, mask, 4, 1), again.augmented(crop, mask, 4, 1)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    # the order of calls does not matter either
    first.augmented(crop, mask, 0, 2)
    assert torch.equal(first.augmented(crop, mask, 4, 1)[0], a[0])
    others = [
        first.augmented(crop, mask, 4, 2),  # another view
        first.augmented(crop, mask, 5, 1),  # another region
        ViewMaker(SMALL, seed=4).augmented(crop, mask, 4, 1),  # another seed
    ]
    for image, _ in others:
        assert not torch.equal(image, a[0])


def test_augmentation_leaves_the_global_random_state_alone():
    maker = ViewMaker(SMALL)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    maker.augmented(textured_crop(), blob_mask(), 1, 1)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("method", ["plain", "augmented"])
def test_grey_crops_become_three_identical_channels(method):
    maker = ViewMaker(GEOMETRIC)
    grey = textured_crop(shape=(50, 60))
    args = (grey, blob_mask()) if method == "plain" else (grey, blob_mask(), 2, 1)
    image, _ = getattr(maker, method)(*args)
    assert image.shape == (3, 32, 32)
    pixels = unnormalise(image)
    torch.testing.assert_close(pixels[1], pixels[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(pixels[2], pixels[0], rtol=0, atol=1e-5)
    # and equal to the same crop given as RGB
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb_args = (rgb, blob_mask()) if method == "plain" else (rgb, blob_mask(), 2, 1)
    torch.testing.assert_close(getattr(maker, method)(*rgb_args)[0], image, rtol=0, atol=0)


def test_the_mask_follows_the_geometric_transforms():
    """A crop whose left half is bright, with the left half as mask: the mask marks the bright pixels."""
    crop = np.full((48, 48, 3), 20, dtype=np.uint8)
    crop[:, :24] = 220
    mask = np.zeros((48, 48), dtype=bool)
    mask[:, :24] = True
    maker = ViewMaker(GEOMETRIC, seed=1)
    where = set()
    for view in range(1, 13):
        image, view_mask = maker.augmented(crop, mask, 0, view)
        assert set(view_mask.unique().tolist()) <= {0.0, 1.0}  # geometric transforms keep a binary mask
        brightness = unnormalise(image).mean(0)
        bright = brightness > 0.5
        agreement = (bright == view_mask.bool()).float().mean().item()
        assert agreement > 0.95, (view, agreement)
        correlation = np.corrcoef(brightness.flatten().numpy(), view_mask.flatten().numpy())[0, 1]
        assert correlation > 0.9, (view, correlation)
        rows, cols = torch.nonzero(view_mask, as_tuple=True)
        where.add((round(rows.float().mean().item() / 32), round(cols.float().mean().item() / 32)))
    assert len(where) >= 3  # the flips and rotations did move the defect around


def test_without_geometric_transforms_only_the_crop_offset_moves_the_mask():
    settings = ViewSettings(
        size=32, resize=32, n_views=2, flips=False, rotations=False, colour_jitter=0, blur_probability=0
    )
    crop, mask = textured_crop((32, 32, 3)), blob_mask((32, 32))
    image, view_mask = ViewMaker(settings).augmented(crop, mask, 0, 1)
    assert torch.equal(view_mask, torch.from_numpy(mask).float())
    plain_image, plain_mask = ViewMaker(settings).plain(crop, mask)
    torch.testing.assert_close(image, plain_image, rtol=0, atol=1e-6)
    assert torch.equal(plain_mask, view_mask)


def test_photometric_changes_leave_the_mask_alone():
    crop, mask = textured_crop(), blob_mask()
    plain = ViewMaker(GEOMETRIC, seed=2)
    jittered = ViewMaker(
        ViewSettings(size=32, resize=40, n_views=2, colour_jitter=0.8, blur_probability=1.0, photometric=True),
        seed=2,
    )
    changed = 0
    for view in range(1, 6):
        a_image, a_mask = plain.augmented(crop, mask, 0, view)
        b_image, b_mask = jittered.augmented(crop, mask, 0, view)
        changed += int(not torch.allclose(a_image, b_image))
        # the photometric steps draw random numbers after the geometric ones: same geometry, same mask
        assert torch.equal(a_mask, b_mask)
    assert changed >= 4


def test_plain_view_keeps_thin_masks_as_fractions():
    crop = textured_crop((64, 64, 3))
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, 21] = True  # a one-pixel crack
    _, view_mask = ViewMaker(SMALL).plain(crop, mask)
    assert view_mask.shape == (32, 32)
    torch.testing.assert_close(view_mask.sum(), torch.tensor(64 / 4))  # area is preserved (64 px / 4)
    values = set(view_mask.unique().tolist())
    assert values == {0.0, 0.5}  # nearest interpolation would have given 0/1 or lost the crack
    assert view_mask[:, 10].eq(0.5).all()


def test_plain_view_is_the_whole_crop_resized():
    crop = np.zeros((40, 40, 3), dtype=np.uint8)
    crop[:20] = 255
    image, mask = ViewMaker(SMALL).plain(crop, np.ones((40, 40), dtype=bool))
    pixels = unnormalise(image)
    assert pixels[:, :15].min() > 0.99
    assert pixels[:, 17:].max() < 0.01
    assert mask.eq(1).all()
    empty = ViewMaker(SMALL).plain(crop, np.zeros((40, 40), dtype=np.uint8))[1]
    assert empty.eq(0).all()


def test_graded_float_guides_keep_their_values():
    crop = textured_crop((40, 40, 3))
    guide = np.zeros((40, 40), dtype=np.float32)
    guide[8:24, 8:24] = 0.25
    guide[12:20, 12:20] = 0.75
    maker = ViewMaker(GEOMETRIC, seed=4)
    for view in range(1, 4):
        _, view_guide = maker.augmented(crop, guide, 0, view)
        assert set(view_guide.unique().tolist()) <= {0.0, 0.25, 0.75}  # geometric steps move, not blend
        assert view_guide.eq(0.75).any()
    _, plain = maker.plain(crop, guide)
    assert plain.max().item() == pytest.approx(0.75)
    assert plain.min().item() == 0.0
    # area interpolation keeps the guide's mass (exactly only for integer ratios; 40 -> 32 is not one)
    assert plain.sum().item() == pytest.approx(float(guide.sum()) * (32 / 40) ** 2, rel=0.05)
