"""The view cache on disk: token shards read by offset, the same values, training and reuse as in memory."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from anomalib_ncd.discovery.token_store import MANIFEST, TokenStore
from anomalib_ncd.discovery.view_cache import build_view_cache, load_view_cache, view_fingerprint
from anomalib_ncd.discovery.views import ViewMaker

from .test_model_cache import SETTINGS, backbone, make_region  # noqa: F401 - the backbone fixture
from .test_model_lightning import fit, make_model, region_list


@pytest.fixture
def filled(tmp_path):
    """A store of 7 regions x 3 views x 5 tokens x 4 channels in shards of 2 regions, and its values."""
    values = torch.randn(7, 3, 5, 4).half()
    region_bytes = 3 * 5 * 4 * 2
    store = TokenStore.create(tmp_path / "views", values.shape, shard_bytes=2 * region_bytes)
    assert store.n_shards == 4
    for region in range(7):
        for view in range(3):
            store.write(region, view, values[region, view])
    store.finish({"fingerprint": "abc"})
    return tmp_path / "views", values


def test_every_indexing_form_reads_what_was_written(filled):
    directory, values = filled
    store = TokenStore.open(directory)
    assert store is not None
    assert store.shape == values.shape
    assert len(store) == 7
    assert torch.equal(store[4, 2], values[4, 2])
    assert torch.equal(store[3, torch.tensor([2, 1])], values[3, torch.tensor([2, 1])])
    assert torch.equal(store[5, [0, 2]], values[5, [0, 2]])
    assert torch.equal(store[1:6, 0], values[1:6, 0])
    assert torch.equal(store[:, 1], values[:, 1])
    assert torch.equal(store[:3, 1:], values[:3, 1:])
    with pytest.raises(IndexError):
        store[7, 0]
    with pytest.raises(IndexError):
        store[0, 3]


def test_shards_are_plain_npy_files(filled):
    directory, values = filled
    first = np.load(directory / "tokens-00000.npy")
    np.testing.assert_array_equal(first, values[:2].numpy())
    last = np.load(directory / "tokens-00003.npy")
    np.testing.assert_array_equal(last, values[6:].numpy())  # the last shard holds the remainder


def test_an_unfinished_store_is_not_a_store(tmp_path):
    store = TokenStore.create(tmp_path, (2, 2, 3, 4))
    store.write(0, 0, torch.zeros(3, 4))
    assert TokenStore.open(tmp_path) is None  # no manifest until finish()
    store.finish()
    assert TokenStore.open(tmp_path) is not None
    with pytest.raises(ValueError, match="shape"):
        TokenStore.create(tmp_path, (2, 2, 3, 4)).write(0, 0, torch.zeros(4, 3))


def test_a_store_crosses_processes_by_reopening_its_files(filled):
    directory, values = filled
    store = TokenStore.open(directory)
    assert store is not None
    store[0, 0]  # opens a shard
    copy = pickle.loads(pickle.dumps(store))
    assert torch.equal(copy[6, 1], values[6, 1])


def test_a_shard_of_the_wrong_shape_is_refused(filled):
    directory, _ = filled
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["shape"][3] = 8
    (directory / MANIFEST).write_text(json.dumps(manifest))
    store = TokenStore.open(directory)
    assert store is not None
    with pytest.raises(ValueError, match="does not hold"):
        store[0, 0]


# ---------------------------------------------------------------------------- the view cache


@pytest.fixture(scope="module")
def cache_regions():
    return [make_region(0), make_region(1, size=48, grey=True), make_region(2, size=36)]


def test_the_cache_on_disk_equals_the_one_in_memory(tmp_path, cache_regions, backbone):  # noqa: F811
    maker = ViewMaker(SETTINGS, seed=5)
    in_memory = build_view_cache(cache_regions, backbone, maker, batch_size=4)
    on_disk = build_view_cache(cache_regions, backbone, maker, batch_size=4, directory=tmp_path)
    assert isinstance(on_disk.tokens, TokenStore)
    assert isinstance(in_memory.tokens, torch.Tensor)
    assert torch.equal(on_disk.tokens[:, :], in_memory.tokens)
    assert torch.equal(on_disk.anomaly, in_memory.anomaly)
    torch.testing.assert_close(on_disk.plain_descriptors(chunk=2), in_memory.plain_descriptors())

    fingerprint = view_fingerprint(cache_regions, backbone, maker)
    loaded = load_view_cache(tmp_path, fingerprint)
    assert loaded is not None
    assert torch.equal(loaded.tokens[:, :], in_memory.tokens)
    for name in ("anomaly", "scores", "areas", "image_index", "whole_image", "soft", "anomalous"):
        torch.testing.assert_close(getattr(loaded, name), getattr(in_memory, name), equal_nan=True)


def test_a_cache_of_other_views_is_not_reused(tmp_path, cache_regions, backbone):  # noqa: F811
    maker = ViewMaker(SETTINGS, seed=5)
    build_view_cache(cache_regions, backbone, maker, batch_size=4, directory=tmp_path)
    assert load_view_cache(tmp_path, view_fingerprint(cache_regions, backbone, maker)) is not None
    assert load_view_cache(tmp_path, view_fingerprint(cache_regions, backbone, ViewMaker(SETTINGS, seed=6))) is None
    assert load_view_cache(tmp_path, view_fingerprint(cache_regions[:2], backbone, maker)) is None
    changed = [make_region(0), make_region(1, size=48, grey=True), make_region(2, size=36)]
    changed[2].crop = changed[2].crop.copy()
    changed[2].crop[0, 0] ^= 1  # one pixel
    assert load_view_cache(tmp_path, view_fingerprint(changed, backbone, maker)) is None


def test_training_on_the_disk_cache_equals_training_in_memory(tmp_path):
    regions = region_list()
    trained = []
    for cache_dir in (None, tmp_path / "views"):
        seed_everything(0, verbose=False)
        model = make_model(epochs=2)
        model.prepare(regions, cache_dir=cache_dir)
        fit(model, epochs=2)
        trained.append(model)
    in_memory, on_disk = trained
    assert isinstance(on_disk.cache.tokens, TokenStore)
    for (name, first), (_, second) in zip(
        in_memory.model.state_dict().items(), on_disk.model.state_dict().items(), strict=True
    ):
        assert torch.equal(first, second), name
    assert np.array_equal(in_memory.discover().classes, on_disk.discover().classes)


def test_prepare_reuses_a_complete_cache_and_rebuilds_an_unfinished_one(tmp_path, monkeypatch):
    import anomalib_ncd.discovery.lightning_model as lightning_model

    regions = region_list()
    seed_everything(0, verbose=False)
    make_model().prepare(regions, cache_dir=tmp_path)
    built = []
    original = lightning_model.build_view_cache

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lightning_model, "build_view_cache", counting)
    seed_everything(0, verbose=False)  # the same random frozen weights
    reused = make_model()
    reused.prepare(regions, cache_dir=tmp_path)
    assert not built  # same regions, weights, views and seed: read back
    assert isinstance(reused.cache.tokens, TokenStore)
    seed_everything(1, verbose=False)
    make_model().prepare(regions, cache_dir=tmp_path)  # other frozen weights: other tokens
    assert built == [1]
    (tmp_path / MANIFEST).unlink()  # as if the run had been killed while caching
    seed_everything(1, verbose=False)
    make_model().prepare(regions, cache_dir=tmp_path)
    assert built == [1, 1]
