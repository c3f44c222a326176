"""The view cache (frozen tokens of every view) and the training pairs drawn from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_ncd.discovery.backbone import CNNTokenBackbone
from anomalib_ncd.discovery.guidance import pool_to_patches
from anomalib_ncd.discovery.training_data import ViewPairDataset, balanced_sampler
from anomalib_ncd.discovery.view_cache import ViewCache, build_view_cache
from anomalib_ncd.discovery.views import ViewMaker, ViewSettings
from anomalib_ncd.regions.crops import Region

SETTINGS = ViewSettings(size=32, resize=40, n_views=3)


def make_region(number, size=40, grey=False, whole_image=False):
    rng = np.random.default_rng(number)
    shape = (size, size) if grey else (size, size, 3)
    crop = rng.integers(0, 256, size=shape, dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    if not whole_image:
        mask[size // 4 : size // 2 + number % 5, size // 3 : size // 2 + 3] = True
    region = Region(
        image_index=number // 2,
        box=(0, 0, size, size),
        area=int(mask.sum()),
        score=0.1 * number,
        whole_image=whole_image,
    )
    region.crop, region.mask = crop, mask
    return region


@pytest.fixture(scope="module")
def regions():
    return [
        make_region(0),
        make_region(1, size=48, grey=True),
        make_region(2, size=36),
        make_region(3, size=44, whole_image=True),
    ]


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return CNNTokenBackbone("mobilenetv2_100", dim=32, depth=1, input_size=32, pretrained=False).eval()


@pytest.fixture(scope="module")
def cache_and_progress(regions, backbone):
    calls = []
    cache = build_view_cache(regions, backbone, ViewMaker(SETTINGS, seed=5), batch_size=5, progress=calls.append)
    return cache, calls


def test_cache_shapes_and_dtypes(cache_and_progress, backbone):
    cache, _ = cache_and_progress
    n_patches = backbone.grid[0] * backbone.grid[1]
    assert len(cache) == 4
    assert cache.n_views == 3
    assert cache.tokens.shape == (4, 4, n_patches, backbone.token_dim)
    assert cache.tokens.dtype == torch.float16
    assert cache.anomaly.shape == (4, 4, n_patches)
    assert cache.anomaly.dtype == torch.float32
    assert torch.isfinite(cache.tokens).all()


def test_cache_region_fields(cache_and_progress, regions):
    cache, _ = cache_and_progress
    torch.testing.assert_close(cache.scores, torch.tensor([r.score for r in regions], dtype=torch.float32))
    torch.testing.assert_close(cache.areas, torch.tensor([float(r.area) for r in regions]))
    assert cache.image_index.tolist() == [0, 0, 1, 1]
    assert cache.whole_image.tolist() == [False, False, False, True]
    assert cache.anomaly[3].eq(0).all()  # the whole-image region has an empty mask
    assert (cache.anomaly[:3].amax(dim=-1) > 0).all()


def test_view_zero_is_the_plain_view_and_the_others_are_augmented(cache_and_progress, regions, backbone):
    cache, _ = cache_and_progress
    maker = ViewMaker(SETTINGS, seed=5)
    for number, region in enumerate(regions):
        image, mask = maker.plain(region.crop, region.mask)
        anomaly = pool_to_patches(mask[None], backbone.grid)
        expected = backbone.frozen(image[None], anomaly)[0]
        torch.testing.assert_close(cache.tokens[number, 0].float(), expected, rtol=1e-3, atol=2e-3)
        torch.testing.assert_close(cache.anomaly[number, 0], anomaly[0])
        for view in range(1, 4):
            image, mask = maker.augmented(region.crop, region.mask, number, view)
            anomaly = pool_to_patches(mask[None], backbone.grid)
            expected = backbone.frozen(image[None], anomaly)[0]
            torch.testing.assert_close(cache.tokens[number, view].float(), expected, rtol=1e-3, atol=2e-3)
            torch.testing.assert_close(cache.anomaly[number, view], anomaly[0])
            assert not torch.equal(cache.tokens[number, view], cache.tokens[number, 0])


def test_progress_counts_every_view(cache_and_progress):
    _, calls = cache_and_progress
    assert sum(calls) == 4 * (1 + 3)
    assert calls == [5, 5, 5, 1]


def test_cache_does_not_depend_on_the_batch_size(cache_and_progress, regions, backbone):
    cache, _ = cache_and_progress
    other = build_view_cache(regions, backbone, ViewMaker(SETTINGS, seed=5), batch_size=64)
    torch.testing.assert_close(other.tokens.float(), cache.tokens.float(), rtol=1e-3, atol=2e-3)
    assert torch.equal(other.anomaly, cache.anomaly)


def test_cache_errors(regions, backbone):
    maker = ViewMaker(SETTINGS)
    missing = Region(image_index=0, box=(0, 0, 10, 10), area=3, score=0.5)
    with pytest.raises(ValueError, match="region 1 has no crop"):
        build_view_cache([regions[0], missing], backbone, maker)
    with pytest.raises(ValueError, match="no regions"):
        build_view_cache([], backbone, maker)


# ------------------------------------------------------------------------------- training pairs


def numbered_cache(n_regions=6, n_views=4):
    """A cache whose tokens hold their own view number, so drawn views can be read back."""
    views = torch.arange(1 + n_views, dtype=torch.float16)
    tokens = views[None, :, None, None].expand(n_regions, -1, 2, 3).clone()
    tokens += 100 * torch.arange(n_regions, dtype=torch.float16)[:, None, None, None]
    return ViewCache(
        tokens=tokens,
        anomaly=torch.rand(n_regions, 1 + n_views, 2),
        scores=torch.linspace(0, 1, n_regions),
        areas=torch.ones(n_regions),
        image_index=torch.arange(n_regions),
        whole_image=torch.zeros(n_regions, dtype=torch.bool),
    )


def test_pairs_are_two_different_augmented_views_of_one_region():
    cache = numbered_cache()
    labels = torch.tensor([-1, -1, -1, -1, 0, 1])
    dataset = ViewPairDataset(cache, labels)
    assert len(dataset) == 6
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        for index in range(6):
            item = dataset[index]
            assert item["tokens"].shape == (2, 2, 3)
            assert item["anomaly"].shape == (2, 2)
            values = item["tokens"][:, 0, 0].float() - 100 * index
            first, second = int(values[0]), int(values[1])
            assert first != second
            assert 1 <= first <= 4
            assert 1 <= second <= 4
            torch.testing.assert_close(item["anomaly"], cache.anomaly[index, [first, second]])
            assert item["label"].item() == labels[index].item()
            assert item["index"].item() == index
            torch.testing.assert_close(item["score"], cache.scores[index])
            seen.update((first, second))
    assert seen == {1, 2, 3, 4}  # every augmented view is used, the plain view 0 never


def test_pairs_depend_on_seed_epoch_and_index_only():
    dataset = ViewPairDataset(numbered_cache(), torch.full((6,), -1), seed=3)
    dataset.epoch = 2
    first = [dataset[i]["tokens"] for i in range(6)]
    torch.manual_seed(123)  # the global generator plays no part
    dataset.epoch = 0
    _ = [dataset[i] for i in range(6)]
    dataset.epoch = 2
    second = [dataset[i]["tokens"] for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    pairs = set()
    for epoch in range(8):
        dataset.epoch = epoch
        pairs.add(tuple(dataset[0]["tokens"][:, 0, 0].tolist()))
    assert len(pairs) > 1  # epochs draw different pairs


def test_pair_dataset_checks_the_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        ViewPairDataset(numbered_cache(), torch.full((5,), -1))


def test_balanced_sampler_is_a_seeded_shuffle_for_a_single_kind():
    for labels in (torch.full((8,), -1), torch.tensor([0, 1, 2, 0])):
        sampler = balanced_sampler(labels, seed=1)
        sampler.set_epoch(4)
        order = list(sampler)
        assert sorted(order) == list(range(len(labels)))
        sampler.set_epoch(4)
        assert list(sampler) == order
        sampler.set_epoch(5)
        assert sorted(sampler) == list(range(len(labels)))


def test_balanced_sampler_draws_labeled_and_unlabeled_about_equally():
    labels = torch.tensor([-1] * 18 + [0, 1])
    sampler = balanced_sampler(labels)
    assert sampler is not None
    assert len(sampler) == 20
    draws = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    draws = torch.tensor(draws)
    assert draws.numel() == 4000
    labeled = (labels[draws] >= 0).float().mean().item()
    assert 0.45 < labeled < 0.55
    # within a kind, regions are drawn uniformly
    counts = torch.bincount(draws, minlength=20).float()
    assert counts[18:].min() > 0.8 * counts[18:].mean()
    assert counts[:18].min() > 0.5 * counts[:18].mean()
