"""Anomaly-centred crops: the published box rule, merging, placement inside odd-shaped images."""

import numpy as np
import pytest

from anomalib_ncd.regions.crops import (
    CropSettings,
    box_gap,
    crop_boxes,
    defect_rectangles,
    merge_close_boxes,
    square_around,
)

REFERENCE = CropSettings(sizing="image")  # AnomalyNCD's published rule


def _mask(shape, *rects):
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = True
    return mask


def test_square_follows_published_half_side_rule():
    # 40x20 defect in a 200x200 image: half = max(int(40 * 1.1 / 2), int(0.1 * 200)) = max(22, 20) = 22
    box = square_around((80, 90, 120, 110), (200, 200), REFERENCE)
    assert box == (100 - 22, 100 - 22, 100 + 22, 100 + 22)


def test_small_defect_gets_minimum_size_and_big_defect_is_capped():
    small = square_around((100, 100, 102, 102), (300, 300), REFERENCE)
    assert small[2] - small[0] == 2 * int(0.1 * 300)
    huge = square_around((0, 0, 300, 290), (300, 300), REFERENCE)
    assert huge == (0, 0, 300, 300)


def test_square_is_shifted_inside_the_image_at_borders():
    box = square_around((0, 0, 4, 4), (100, 100), REFERENCE)
    assert box[0] == 0 and box[1] == 0 and box[2] == 20 and box[3] == 20
    box = square_around((96, 96, 100, 100), (100, 100), REFERENCE)
    assert box == (80, 80, 100, 100)


def test_odd_aspect_ratio_region_spans_short_side_without_leaving_image():
    # 60 x 600 image (MTD-like strip): min half-side 60 > short side / 2
    box = square_around((300, 20, 310, 30), (60, 600), REFERENCE)
    x0, y0, x1, y1 = box
    assert (y0, y1) == (0, 60)
    assert x1 - x0 == 120 and x0 <= 300 and x1 >= 310
    assert x0 >= 0 and x1 <= 600


def test_defect_sizing_is_in_units_of_the_defect_whatever_the_image_size():
    # a 30 px defect: side 2 * 30 = 60 in a 300 px image and in a 3000 px one (the reference: 60 and 600)
    for long_side in (300, 3000):
        box = square_around((100, 100, 130, 110), (long_side, long_side), CropSettings())
        assert box[2] - box[0] == box[3] - box[1] == 60
        reference = square_around((100, 100, 130, 110), (long_side, long_side), REFERENCE)
        assert reference[2] - reference[0] == max(2 * int(30 * 1.1 / 2), 2 * int(0.1 * long_side))


def test_defect_sizing_floor_and_cap():
    tiny = square_around((50, 50, 52, 52), (1000, 1000), CropSettings(min_pixels=32))
    assert tiny[2] - tiny[0] == 32
    large = square_around((0, 0, 200, 180), (300, 300), CropSettings())
    assert large == (0, 0, 300, 300)
    with pytest.raises(ValueError, match="sizing"):
        CropSettings(sizing="huge")
    with pytest.raises(ValueError, match="context"):
        CropSettings(context=0.5)


def test_box_gap():
    assert box_gap((0, 0, 10, 10), (5, 5, 20, 20)) == 0
    assert box_gap((0, 0, 10, 10), (13, 0, 20, 10)) == 3
    assert box_gap((0, 0, 10, 10), (13, 14, 20, 20)) == pytest.approx(5.0)


def test_merge_is_transitive_and_result_square():
    boxes = [(0, 0, 10, 10), (12, 0, 22, 10), (24, 0, 34, 10), (80, 80, 90, 90)]
    merged = merge_close_boxes(boxes, (100, 100), 0.03)  # threshold int(3.0) = 3: gaps of 2 merge
    assert len(merged) == 2
    big = merged[0]
    assert big[2] - big[0] == big[3] - big[1] == 34
    assert merged[1] == (80, 80, 90, 90)


def test_far_boxes_do_not_merge():
    boxes = [(0, 0, 10, 10), (50, 50, 60, 60)]
    assert sorted(merge_close_boxes(boxes, (100, 100), 0.01)) == sorted(boxes)


def test_crop_boxes_keeps_at_most_count_largest():
    mask = _mask((400, 400), (10, 10, 30, 30), (200, 200, 260, 260), (350, 20, 356, 26))
    assert len(defect_rectangles(mask)) == 3
    boxes = crop_boxes(mask, n_anomalies=2)
    assert len(boxes) == 2
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)
    assert boxes[0][0] <= 200 and boxes[0][2] >= 260  # the biggest defect is inside the biggest box
    assert len(crop_boxes(mask, n_anomalies=2, settings=CropSettings(keep_extra=True))) == 3


def test_every_defect_pixel_lies_in_a_box_when_count_suffices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = (int(rng.integers(40, 300)), int(rng.integers(40, 300)))
        rects = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, shape[1] - 5)), int(rng.integers(0, shape[0] - 5))
            rects.append((x0, y0, x0 + int(rng.integers(2, 6)), y0 + int(rng.integers(2, 6))))
        mask = _mask(shape, *rects)
        boxes = crop_boxes(mask, n_anomalies=10)
        covered = np.zeros(shape, dtype=bool)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
            covered[y0:y1, x0:x1] = True
        assert covered[mask].all()


def test_empty_mask_gives_no_box():
    assert crop_boxes(np.zeros((50, 50), bool), n_anomalies=0) == []


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="padding"):
        CropSettings(padding=-1)
    with pytest.raises(ValueError, match="min_size"):
        CropSettings(min_size=0.7)
