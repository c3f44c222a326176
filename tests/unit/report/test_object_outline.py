"""The object prior's outline on the gallery thumbnails."""

import cv2
import numpy as np
import pandas as pd

from anomalib_ncd.report.thumbnails import draw_object_outline, make_thumbnails


def test_outline_follows_the_object_and_whole_images_draw_nothing():
    thumbnail = np.zeros((40, 60, 3), np.uint8)
    on_object = np.zeros((80, 120), bool)
    on_object[20:60, 30:90] = True  # the thumbnail's [10:30, 15:45]
    drawn = draw_object_outline(thumbnail, on_object)
    white = np.all(drawn == (255, 255, 0), axis=2)
    assert white[10, 15:45].all() and white[29, 15:45].all()  # top and bottom edges
    assert not white[12:28, 17:43].any()  # inside stays untouched
    assert not white[:8].any()
    np.testing.assert_array_equal(draw_object_outline(thumbnail, np.ones((80, 120), bool)), thumbnail)
    assert thumbnail.max() == 0  # not modified in place


class LeftHalf:
    def mask(self, image, path=None):
        on_object = np.zeros(image.shape[:2], bool)
        on_object[:, : image.shape[1] // 2] = True
        return on_object


def test_thumbnails_with_a_prior_show_its_outline(tmp_path):
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), np.full((64, 96, 3), 60, np.uint8))
    regions = pd.DataFrame({"x0": [10], "y0": [10], "x1": [30], "y1": [30], "pred_class": [0], "whole_image": [False]})
    plain = make_thumbnails(path, np.zeros((8, 8)), regions, (0.0, 1.0), 48)
    outlined = make_thumbnails(path, np.zeros((8, 8)), regions, (0.0, 1.0), 48, object_prior=LeftHalf())
    assert plain.boxes != outlined.boxes
    assert plain.overlay == outlined.overlay and plain.crop == outlined.crop
