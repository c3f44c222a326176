"""Letterboxing for the detector: aspect ratio kept in a square input, maps cropped back to the image."""

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from anomalib_ncd.data import to_anomalib_datamodule
from anomalib_ncd.data.letterbox import Letterbox, choose_input_size, content_shape, unletterbox_map
from anomalib_ncd.data.samples import make_sample_table


def test_content_shape_keeps_the_aspect_ratio():
    assert content_shape((100, 300), 256) == (85, 256)
    assert content_shape((300, 100), 256) == (256, 85)
    assert content_shape((1, 5000), 256) == (1, 256)
    assert content_shape((64, 64), 256) == (256, 256)


def test_input_size_follows_the_images_within_bounds():
    assert choose_input_size([(768, 1024)] * 5) == 512  # capped
    assert choose_input_size([(123, 286), (265, 375), (218, 273)]) == 288  # median 286 -> 288
    assert choose_input_size([(32, 48)]) == 256  # floor
    assert choose_input_size([]) == 256


def test_letterbox_image_and_mask_share_the_geometry_and_masks_stay_binary():
    image = torch.zeros(3, 40, 120)
    image[:, 10:20, 60:90] = 1.0
    mask = torch.zeros(1, 40, 120, dtype=torch.uint8)
    mask[:, 10:20, 60:90] = 1
    out_image, out_mask = Letterbox(96)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert out_image.shape == (3, 96, 96) and out_mask.shape == (1, 96, 96)
    assert set(torch.unique(out_mask).tolist()) <= {0, 1}  # nearest for masks
    assert out_image[:, 32:].abs().sum() == 0 and out_mask[:, 32:].sum() == 0  # padding below the content
    rows, cols = torch.nonzero(out_mask[0], as_tuple=True)
    # the defect keeps its 1:3 shape (a squash to 96 x 96 would make it 24 x 24)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (8, 24)
    with pytest.raises(ValueError, match="size"):
        Letterbox(0)


def test_unletterbox_map_is_the_inverse_on_the_content():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((60, 150)).astype(np.float32), (0, 0), 3)
    boxed = Letterbox(128)(tv_tensors.Image(torch.from_numpy(image)[None]))[0].numpy()
    back = unletterbox_map(boxed, image.shape)
    assert back.shape == content_shape(image.shape, 128)
    restored = cv2.resize(back, (150, 60), interpolation=cv2.INTER_LINEAR)
    assert np.abs(restored - image).mean() < 0.01
    with pytest.raises(ValueError, match="square"):
        unletterbox_map(np.zeros((4, 6)), (4, 6))


def test_datamodule_letterboxes_every_image_to_the_same_square(tmp_path):
    rows = []
    for number, shape in enumerate([(40, 120), (90, 60), (50, 50)]):
        path = tmp_path / f"{number}.png"
        cv2.imwrite(str(path), np.full((*shape, 3), 200, np.uint8))
        rows.append({"image_path": str(path), "defect_type": "good", "is_normal": True, "split": "test"})
    datamodule = to_anomalib_datamodule(make_sample_table(rows), image_size=64, letterbox=True, eval_batch_size=3)
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    assert tuple(batch.image.shape) == (3, 3, 64, 64)
    for image, shape in zip(batch.image, [(40, 120), (90, 60), (50, 50)], strict=True):
        height, width = content_shape(shape, 64)
        assert image[:, :height, :width].min() > 0.5  # the content
        assert image[:, height:, :].abs().sum() == 0 and image[:, :, width:].abs().sum() == 0
    with pytest.raises(ValueError, match="square"):
        to_anomalib_datamodule(make_sample_table(rows), image_size=(64, 32), letterbox=True)
