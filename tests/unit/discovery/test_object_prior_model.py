"""Object priors in the region stage and the discovery model: masks on regions, dropping, train/predict parity."""

from __future__ import annotations

import numpy as np
import pytest
from lightning.pytorch import seed_everything

from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.pipeline.checkpoint import save_model_checkpoint
from anomalib_ncd.priors.settings import ObjectPriorSettings
from anomalib_ncd.regions.extract import boxes_on_object, extract_regions, regions_of_image
from tests.unit.discovery.test_model_lightning import SHAPE, fit, make_model, make_scene


class LeftPart:
    """An object prior whose object is the left ``fraction`` of every image (a known answer)."""

    name = "left_part"

    def __init__(self, fraction: float = 0.5) -> None:
        self.fraction = fraction
        self.calls = 0

    def mask(self, image, path=None):
        self.calls += 1
        on_object = np.zeros(image.shape[:2], bool)
        on_object[:, : int(image.shape[1] * self.fraction)] = True
        return on_object


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("object_scene"))


def test_regions_carry_the_crop_of_the_object_mask(scene):
    _, _, _, map_set = scene
    prior = LeftPart()
    region_set = extract_regions(map_set, object_prior=prior)
    assert prior.calls == len(map_set)
    full = prior.mask(np.zeros((*SHAPE, 3), np.uint8))
    for region in region_set:
        x0, y0, x1, y1 = region.box
        np.testing.assert_array_equal(region.object_mask, full[y0:y1, x0:x1])
    assert all(region.object_mask is None for region in extract_regions(map_set))


def test_drop_outside_removes_regions_off_the_object(scene):
    _, _, centres, map_set = scene
    kept = extract_regions(map_set, object_prior=LeftPart(), min_inside=0.5)
    every = extract_regions(map_set)
    checked = {"off": 0, "on": 0}
    for index, centre in enumerate(centres):
        found = [region for region in kept.of_image(index) if not region.whole_image]
        if centre is not None and centre[1] >= SHAPE[1] // 2 + 6:  # the blob lies on the background
            assert not found
            assert [region.whole_image for region in kept.of_image(index)] == [True]  # like nothing found
            checked["off"] += 1
        elif centre is not None and centre[1] < SHAPE[1] // 2 - 6:
            assert found
            assert len(found) == len([r for r in every.of_image(index) if not r.whole_image])
            checked["on"] += 1
    assert checked["off"] >= 2 and checked["on"] >= 1


def test_boxes_on_object_counts_anomalous_pixels_not_box_area():
    anomaly = np.zeros((10, 10), bool)
    anomaly[2:4, 2:8] = True  # 12 pixels, 4 on the object (columns < 4)
    on_object = np.zeros((10, 10), bool)
    on_object[:, :4] = True
    box = [(0, 0, 10, 10)]
    assert boxes_on_object(box, anomaly, on_object, 0.3) == box
    assert boxes_on_object(box, anomaly, on_object, 0.4) == []
    assert boxes_on_object(box, np.zeros_like(anomaly), on_object, 0.5) == []  # no anomaly: nothing inside


def test_min_inside_without_prior_is_an_error(scene):
    with pytest.raises(ValueError, match="object prior"):
        extract_regions(scene[3], min_inside=0.5)


def test_object_mask_of_the_wrong_shape_is_an_error(scene):
    images, maps, _, map_set = scene
    model_mebin = extract_regions(map_set).mebin
    with pytest.raises(ValueError, match="object mask"):
        regions_of_image(images[3], maps[3], model_mebin, object_mask=np.ones((5, 5), bool))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="kind"):
        ObjectPriorSettings(kind="sam")
    with pytest.raises(ValueError, match="drop_outside"):
        ObjectPriorSettings(drop_outside=True)
    with pytest.raises(ValueError, match="min_inside"):
        ObjectPriorSettings(kind="whole_image", min_inside=1.5)


def test_model_trains_with_object_masks_and_predicts_like_it_trained(scene, tmp_path):
    images, maps, _, map_set = scene
    prior = LeftPart()
    seed_everything(0, verbose=False)
    model = make_model(epochs=1, guidance={"mode": "soft_rgf"}, object_prior={"kind": "whole_image"})
    model.object_prior = prior  # the prior that cut the training regions
    region_set = extract_regions(map_set, object_prior=prior)
    model.prepare(region_set)
    assert model.cache.objects is not None
    fit(model, root=tmp_path, epochs=1)
    trained = model.region_features()
    found = model.classify_images(images, maps)
    np.testing.assert_allclose(found.region_features, trained, rtol=1e-3, atol=1e-3)
    # without the prior at predict time the features are not the trained ones
    model.object_prior = None
    assert not np.allclose(model.classify_images(images, maps).region_features, trained, atol=1e-3)

    path = save_model_checkpoint(model, tmp_path / "model.ckpt")
    loaded = AnomalyNCD.load_from_checkpoint(str(path), map_location="cpu")
    assert loaded.object_prior_settings == ObjectPriorSettings(kind="whole_image")
    assert loaded.settings_dict()["object_prior"]["kind"] == "whole_image"
