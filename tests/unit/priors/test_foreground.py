import numpy as np
import pytest

from anomalib_ncd.priors import ForegroundParameters, ForegroundPrior, WholeImagePrior
from anomalib_ncd.priors import foreground as fg


def _disc_scene(height, width, centre, radius, *, colour=False, seed=0):
    """A bright disc on a dark, slightly noisy uniform background; returns (image, disc mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    grey = np.where(disc, 200.0, 40.0) + rng.normal(0, 5, (height, width))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    if not colour:
        return grey, disc
    rgb = np.stack([grey, (grey * 0.4).astype(np.uint8), 255 - grey], axis=-1)
    return rgb.astype(np.uint8), disc


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_whole_image_prior_is_all_true():
    prior = WholeImagePrior()
    mask = prior.mask(np.zeros((7, 11, 3), dtype=np.uint8))
    assert mask.shape == (7, 11)
    assert mask.dtype == bool
    assert mask.all()
    assert prior.fingerprint() == "whole_image:v1"


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize(
    ("height", "width", "centre", "radius"),
    [(240, 240, (120, 120), 60), (90, 700, (45, 300), 35), (900, 600, (400, 300), 200), (48, 64, (24, 30), 12)],
)
def test_disc_on_uniform_background(height, width, centre, radius, colour):
    image, disc = _disc_scene(height, width, centre, radius, colour=colour)
    prior = ForegroundPrior()
    result = prior.compute(image)
    assert result.fallback is None
    assert result.mask.shape == (height, width)
    assert result.mask.dtype == bool
    assert _iou(result.mask, disc) > 0.9
    assert prior.fallback_counts == {}


def test_ring_is_filled():
    image, disc = _disc_scene(200, 200, (100, 100), 70)
    rows, cols = np.mgrid[:200, :200]
    image[(rows - 100) ** 2 + (cols - 100) ** 2 <= 30**2] = 40  # dark centre: a bottle seen from above
    assert _iou(ForegroundPrior().mask(image), disc) > 0.9


def test_object_touching_two_sides_is_kept():
    image = np.full((200, 300), 30, dtype=np.uint8)
    image[:, 120:180] = 220  # a band from top to bottom (a zipper)
    mask = ForegroundPrior().mask(image)
    band = np.zeros(image.shape, dtype=bool)
    band[:, 120:180] = True
    assert _iou(mask, band) > 0.9


@pytest.mark.parametrize("kind", ["noise", "smooth", "stripes", "checker"])
def test_textures_filling_the_frame_give_the_whole_image(kind):
    rng = np.random.default_rng(3)
    rows, cols = np.indices((300, 420))
    if kind == "noise":
        image = rng.integers(0, 256, (300, 420), dtype=np.uint8)
    elif kind == "smooth":
        import cv2

        field = cv2.GaussianBlur(rng.normal(0, 1, (300, 420)), (0, 0), 6)
        image = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
    elif kind == "stripes":
        image = ((cols // 10) % 2 * 200 + 20).astype(np.uint8)
    else:
        checker = ((rows // 16 + cols // 16) % 2 * 150 + 50).astype(np.uint8)
        image = np.stack([checker, checker // 2, 255 - checker], axis=-1)
    prior = ForegroundPrior()
    result = prior.compute(image)
    assert result.mask.all()
    assert result.fallback is not None
    assert sum(prior.fallback_counts.values()) == 1


def test_flat_and_tiny_images_give_the_whole_image():
    prior = ForegroundPrior()
    assert prior.compute(np.full((50, 80, 3), 90, dtype=np.uint8)).fallback == fg.NO_OBJECT
    tiny = prior.compute(np.zeros((5, 9), dtype=np.uint8))
    assert tiny.fallback == fg.IMAGE_TOO_SMALL
    assert tiny.mask.shape == (5, 9)
    assert tiny.mask.all()


def test_speck_and_covering_object_give_the_whole_image():
    image = np.full((300, 300), 30, dtype=np.uint8)
    image[150:153, 150:153] = 250
    assert ForegroundPrior().compute(image).fallback in {fg.OBJECT_TOO_SMALL, fg.NO_OBJECT}
    covering = np.full((300, 300), 220, dtype=np.uint8)
    covering[:4] = 30
    covering[-4:] = 30
    covering[:, :4] = 30
    covering[:, -4:] = 30
    assert ForegroundPrior().compute(covering).mask.all()


def test_deterministic_and_grey_equals_grey_rgb():
    image, _ = _disc_scene(180, 260, (90, 120), 50, seed=5)
    first = ForegroundPrior().mask(image)
    assert np.array_equal(first, ForegroundPrior().mask(image.copy()))
    assert np.array_equal(first, ForegroundPrior().mask(np.repeat(image[:, :, None], 3, axis=2)))
    assert np.array_equal(first, ForegroundPrior().mask(image[:, :, None]))


def test_fingerprint_follows_parameters():
    assert ForegroundPrior().fingerprint() == ForegroundPrior().fingerprint()
    assert ForegroundPrior().fingerprint() != ForegroundPrior(ForegroundParameters(min_score=4)).fingerprint()


@pytest.mark.parametrize(
    "changes",
    [{"working_size": 8}, {"border_fraction": 0.6}, {"min_object_fraction": 0.99}, {"noise_floor": 0}],
)
def test_invalid_parameters(changes):
    with pytest.raises(ValueError, match="foreground"):
        ForegroundParameters(**changes)


@pytest.mark.parametrize(
    "image", [np.zeros((10, 10), dtype=np.float32), np.zeros((10, 10, 2), dtype=np.uint8), np.zeros((0, 4), np.uint8)]
)
def test_invalid_images_are_refused(image):
    with pytest.raises(ValueError, match="object priors take"):
        ForegroundPrior().mask(image)


def test_a_repeating_pattern_across_the_frame_gives_the_whole_image():
    """Brick: mortar lines differ from the bricks along the border, but cross the edge everywhere."""
    from skimage.data import brick

    image = brick()[:192, :256]
    prior = ForegroundPrior()
    assert prior.mask(image).all()
    assert prior.fallback_counts.get(fg.TEXTURED_BORDER) == 1


def test_edge_crossings_counts_runs_around_the_frame():
    mask = np.zeros((8, 10), bool)
    assert fg.edge_crossings(mask) == 0
    mask[3:5, 3:6] = True  # inside: no crossing
    assert fg.edge_crossings(mask) == 0
    mask[0, 0] = mask[0, 1] = mask[1, 0] = True  # a corner run, wrapping around the walk's start
    assert fg.edge_crossings(mask) == 1
    mask[:, 7] = True  # a strip from top to bottom
    assert fg.edge_crossings(mask) == 3
    assert fg.edge_crossings(np.ones((4, 4), bool)) == 1
