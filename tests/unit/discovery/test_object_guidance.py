"""The object prior's path through the model: region crops -> views -> cache -> guided attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_ncd.discovery.backbone import CNNTokenBackbone, ViTTokenBackbone
from anomalib_ncd.discovery.guidance import GuidanceSettings, pool_to_patches
from anomalib_ncd.discovery.training_data import ViewPairDataset
from anomalib_ncd.discovery.view_cache import build_view_cache, has_object_masks, region_view
from anomalib_ncd.discovery.views import ViewMaker, ViewSettings
from tests.unit.discovery.test_model_cache import make_region

SETTINGS = ViewSettings(size=32, resize=40, n_views=3)
RGF = GuidanceSettings(mode="soft_rgf", n_layers=2)


def with_object(region, left_fraction=0.5):
    """The region with an object mask covering the left part of its crop."""
    on_object = np.zeros(region.mask.shape, bool)
    on_object[:, : int(region.mask.shape[1] * left_fraction)] = True
    region.object_mask = on_object
    return region


@pytest.fixture
def regions():
    return [with_object(make_region(0)), with_object(make_region(1, size=48, grey=True), 0.25), make_region(2)]


@pytest.mark.parametrize("view_number", [0, 1, 2])
def test_object_mask_takes_the_geometric_transform_of_the_pixels(regions, view_number):
    maker = ViewMaker(SETTINGS, seed=3)
    region = regions[0]
    image, anomaly, on_object = region_view(region, maker, RGF, (4, 4), 0, view_number, with_object=True)
    plain_image, plain_anomaly, none = region_view(region, maker, RGF, (4, 4), 0, view_number, with_object=False)
    # adding the object channel changes neither the pixels nor the anomaly guide of the view
    torch.testing.assert_close(image, plain_image, rtol=0, atol=0)
    torch.testing.assert_close(anomaly, plain_anomaly, rtol=0, atol=0)
    assert none is None
    # the object channel is the same view of the object mask, made on its own
    guide = np.asarray(region.object_mask, np.float32)
    if view_number == 0:
        _, expected = maker.plain(region.crop, guide)
    else:
        _, expected = maker.augmented(region.crop, guide, 0, view_number)
    torch.testing.assert_close(on_object, pool_to_patches(expected[None], (4, 4))[0])


def test_a_region_without_object_mask_is_all_object(regions):
    _, _, on_object = region_view(regions[2], ViewMaker(SETTINGS), RGF, (4, 4), with_object=True)
    torch.testing.assert_close(on_object, torch.ones(16))


def test_cache_keeps_object_coverage_and_training_pairs_carry_it(regions):
    torch.manual_seed(0)
    backbone = CNNTokenBackbone("mobilenetv2_100", dim=32, input_size=32, guidance=RGF, pretrained=False).eval()
    assert has_object_masks(regions)
    cache = build_view_cache(regions, backbone, ViewMaker(SETTINGS, seed=5), batch_size=5)
    assert cache.objects is not None
    assert cache.objects.shape == cache.anomaly.shape
    # left half of region 0's plain view is object, right half background
    plain = cache.objects[0, 0].reshape(backbone.grid)
    assert plain[:, : backbone.grid[1] // 2].min() == 1
    assert plain[:, backbone.grid[1] // 2 :].max() == 0
    assert cache.objects[2].min() == 1  # no object mask: all object
    item = ViewPairDataset(cache, torch.full((3,), -1))[0]
    assert item["object"].shape == item["anomaly"].shape
    without = build_view_cache([make_region(0)], backbone, ViewMaker(SETTINGS, seed=5))
    assert without.objects is None
    assert "object" not in ViewPairDataset(without, torch.full((1,), -1))[0]


def test_object_prior_changes_the_guided_vit_tokens_only_in_soft_rgf_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)  # a 4x4 grid of 16-pixel patches
    anomaly = torch.zeros(2, 16)
    anomaly[:, 5] = 1.0
    on_object = torch.zeros(2, 16)
    on_object[:, :8] = 1.0

    def tokens(mode):
        torch.manual_seed(1)
        vit = ViTTokenBackbone(
            "vit_tiny_patch16_224",
            guidance=GuidanceSettings(mode=mode, n_layers=12),
            pretrained=False,
            input_size=64,
        ).eval()
        everywhere = torch.ones(2, 16)
        return vit.frozen(x, anomaly, on_object), vit.frozen(x, anomaly, None), vit.frozen(x, anomaly, everywhere)

    rgf_object, rgf_none, rgf_all = tokens("soft_rgf")
    assert not torch.allclose(rgf_object, rgf_none)
    torch.testing.assert_close(rgf_none, rgf_all)  # no prior means the whole view is object
    soft_object, soft_none, _ = tokens("soft")
    torch.testing.assert_close(soft_object, soft_none)  # only the RGF mode reads the prior
