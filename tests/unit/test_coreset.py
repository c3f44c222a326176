"""FastKCenterGreedy selects what anomalib's KCenterGreedy selects; Patchcore uses it through make_patchcore."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from anomalib.models import Patchcore
from anomalib.models.components.sampling import KCenterGreedy
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from anomalib_ncd import coreset
from anomalib_ncd.coreset import FastCoresetPatchcoreModel, FastKCenterGreedy, use_fast_coreset
from anomalib_ncd.detector import make_patchcore
from anomalib_ncd.pipeline.checkpoint import save_model_checkpoint

# The default backbone's offline tag needs its weights registered; random weights need no tag.
TINY_BACKBONE = "mobilenetv2_100"


def _seeded(seed: int) -> None:
    # anomalib's projection draws from torch's and numpy's global generators, its start from torch's.
    torch.manual_seed(seed)
    np.random.seed(seed)


def _indices(sampler_class: type[KCenterGreedy], embedding: torch.Tensor, ratio: float, seed: int) -> list[int]:
    _seeded(seed)
    return sampler_class(embedding, ratio).select_coreset_idxs()


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1000 + seed))


def _low_rank(n: int, d: int, seed: int) -> torch.Tensor:
    # Like Patchcore features: most variance on a few axes, so the lower bound skips most rows.
    generator = torch.Generator().manual_seed(2000 + seed)
    latent = torch.randn(n, 6, generator=generator) * torch.tensor([4.0, 3.0, 2.0, 1.5, 1.0, 0.8])
    mixing = torch.randn(6, d, generator=generator)
    return (latent @ mixing + 0.05 * torch.randn(n, d, generator=generator)).relu()


@pytest.mark.parametrize(
    ("n", "d", "ratio", "seed"),
    [
        (2000, 64, 0.05, 0),  # embedding narrower than the projection: R factor of the projection
        (3000, 200, 0.02, 1),
        (1200, 400, 0.1, 2),  # wider than the projection (180 components): the projection itself
        (4000, 32, 0.04, 3),
        (500, 128, 0.3, 4),
    ],
)
def test_same_indices_as_anomalib_on_gaussian_inputs(n, d, ratio, seed):
    embedding = _gaussian(n, d, seed)
    expected = _indices(KCenterGreedy, embedding, ratio, seed)
    assert len(expected) == int(n * ratio)
    assert _indices(FastKCenterGreedy, embedding, ratio, seed) == expected


@pytest.mark.parametrize("path", ["pruned", "dense"])
@pytest.mark.parametrize(("n", "d", "ratio", "seed"), [(3000, 128, 0.05, 5), (2500, 48, 0.08, 6)])
def test_same_indices_as_anomalib_on_structured_inputs(monkeypatch, path, n, d, ratio, seed):
    # Both ways a selection updates the minima: bound + candidate rows, or one pass over all rows.
    monkeypatch.setattr(coreset, "_DENSE_FRACTION", 1.0 if path == "pruned" else 0.0)
    embedding = _low_rank(n, d, seed)
    assert _indices(FastKCenterGreedy, embedding, ratio, seed) == _indices(KCenterGreedy, embedding, ratio, seed)


def test_the_bound_skips_rows_on_structured_inputs(monkeypatch):
    # The speed-up is real only if few rows get a full distance; count them.
    checked = []
    original = torch.Tensor.nonzero

    def counting_nonzero(self, *args, **kwargs):
        found = original(self, *args, **kwargs)
        checked.append(found.shape[0])
        return found

    embedding = _low_rank(4000, 128, 7)
    _seeded(7)
    sampler = FastKCenterGreedy(embedding, 0.05)
    monkeypatch.setattr(torch.Tensor, "nonzero", counting_nonzero)
    sampler.select_coreset_idxs()
    monkeypatch.undo()
    assert len(checked) == sampler.coreset_size - 2  # one bound per update but the first and last
    assert np.mean(checked) < 0.2 * 4000


def test_same_coreset_tensor_and_other_seeds_differ():
    embedding = _gaussian(1500, 96, 8)
    _seeded(8)
    expected = KCenterGreedy(embedding, 0.04).sample_coreset()
    _seeded(8)
    found = FastKCenterGreedy(embedding, 0.04).sample_coreset()
    assert torch.equal(found, expected)
    assert _indices(FastKCenterGreedy, embedding, 0.04, 9) != _indices(FastKCenterGreedy, embedding, 0.04, 8)


def test_same_coreset_with_duplicated_rows():
    # Exact duplicates tie; whichever copy is chosen, the memory bank is the same.
    distinct = _low_rank(300, 40, 10)
    embedding = distinct[torch.randperm(900, generator=torch.Generator().manual_seed(0)) % 300]
    _seeded(10)
    expected = KCenterGreedy(embedding, 0.2).sample_coreset()
    _seeded(10)
    assert torch.equal(FastKCenterGreedy(embedding, 0.2).sample_coreset(), expected)


def test_unprojected_embedding_of_more_dimensions():
    # anomalib flattens an (n, ...) embedding without projecting it.
    embedding = _gaussian(800, 24, 11).reshape(800, 4, 6)
    assert _indices(FastKCenterGreedy, embedding, 0.05, 11) == _indices(KCenterGreedy, embedding, 0.05, 11)


def test_leaves_min_distances_as_anomalib_does():
    embedding = _gaussian(600, 20, 12)
    _seeded(12)
    reference = KCenterGreedy(embedding, 0.05)
    reference.select_coreset_idxs()
    _seeded(12)
    fast = FastKCenterGreedy(embedding, 0.05)
    fast.select_coreset_idxs()
    assert fast.min_distances.shape == reference.min_distances.shape == (600, 1)
    torch.testing.assert_close(fast.min_distances, reference.min_distances, rtol=1e-4, atol=1e-4)


def test_single_index_coreset_is_the_random_start():
    embedding = _gaussian(150, 8, 13)
    assert _indices(FastKCenterGreedy, embedding, 0.01, 13) == _indices(KCenterGreedy, embedding, 0.01, 13)


def test_selection_loop_threads_are_limited_then_restored(monkeypatch):
    seen = []
    greedy = FastKCenterGreedy._greedy

    def recording_greedy(self, start):
        seen.append(torch.get_num_threads())
        return greedy(self, start)

    monkeypatch.setattr(FastKCenterGreedy, "_greedy", recording_greedy)
    embedding = _gaussian(300, 8, 14)
    torch.set_num_threads(2)  # the module fixture restores the test session's setting afterwards
    expected = _indices(FastKCenterGreedy, embedding, 0.05, 14)
    assert torch.get_num_threads() == 2
    _seeded(14)
    assert FastKCenterGreedy(embedding, 0.05, loop_threads=None).select_coreset_idxs() == expected
    assert seen == [1, 2]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="coreset_size"):
        FastKCenterGreedy(torch.randn(10, 4), 0.01)
    with pytest.raises(ValueError, match="bound_dims"):
        FastKCenterGreedy(torch.randn(100, 4), 0.1, bound_dims=0)
    with pytest.raises(ValueError, match="loop_threads"):
        FastKCenterGreedy(torch.randn(100, 4), 0.1, loop_threads=0)


def _store_tiny_embeddings(model: Patchcore, seed: int) -> None:
    torch.manual_seed(seed)
    model.model.train()
    with torch.no_grad():
        model.model(torch.rand(3, 3, 64, 64))


def test_make_patchcore_uses_the_fast_sampler_and_keeps_anomalib_memory_bank():
    torch.manual_seed(0)
    model = make_patchcore(TINY_BACKBONE, pre_trained=False, coreset_sampling_ratio=0.1)
    assert isinstance(model, Patchcore)
    assert type(model.model) is FastCoresetPatchcoreModel
    assert model.name == "Patchcore"
    _store_tiny_embeddings(model, 1)
    embedding = torch.vstack(model.model.embedding_store).clone()
    assert embedding.shape == (3 * 8 * 8, 128)  # MobileNetV2 blocks.2 + blocks.4: stride 8, 32 + 96 dims
    _seeded(2)
    expected = KCenterGreedy(embedding, 0.1).sample_coreset()
    _seeded(2)
    model.fit()  # Patchcore's own fit: the torch model's subsample_embedding
    assert model.model.memory_bank.shape == (19, 128)
    assert torch.equal(model.model.memory_bank, expected)
    assert model.model.embedding_store == []


def test_make_patchcore_can_keep_anomalib_sampler():
    model = make_patchcore(TINY_BACKBONE, pre_trained=False, fast_coreset=False)
    assert type(model.model) is PatchcoreModel


def test_fast_torch_model_has_patchcore_behaviour():
    model = use_fast_coreset(Patchcore(backbone="resnet18", layers=["layer2"], pre_trained=False))
    with pytest.raises(ValueError, match="Embedding store is empty"):
        model.model.subsample_embedding(0.1)
    _store_tiny_embeddings(model, 3)
    with pytest.warns(DeprecationWarning, match="embeddings"):
        model.model.subsample_embedding(0.1, embeddings=torch.zeros(1))
    assert model.model.memory_bank.shape == (19, 128)
    _store_tiny_embeddings(model, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.model.subsample_embedding(0.5)
    assert model.model.memory_bank.shape == (96, 128)


def test_use_fast_coreset_is_idempotent_and_refuses_other_subclasses():
    model = Patchcore(backbone="resnet18", layers=["layer2"], pre_trained=False)
    keys = set(model.state_dict())
    assert use_fast_coreset(use_fast_coreset(model)) is model
    assert type(model.model) is FastCoresetPatchcoreModel
    assert set(model.state_dict()) == keys

    class OwnSampling(PatchcoreModel):
        pass

    model.model = OwnSampling(layers=["layer2"], backbone="resnet18", pre_trained=False)
    with pytest.raises(TypeError, match="OwnSampling"):
        use_fast_coreset(model)


def test_checkpoint_loads_into_anomalib_patchcore(tmp_path):
    torch.manual_seed(0)
    model = make_patchcore(TINY_BACKBONE, pre_trained=False, coreset_sampling_ratio=0.1)
    _store_tiny_embeddings(model, 4)
    model.fit()
    path = save_model_checkpoint(model, tmp_path / "model.ckpt")
    loaded = Patchcore.load_from_checkpoint(str(path), map_location="cpu", weights_only=False)
    assert type(loaded) is Patchcore
    assert torch.equal(loaded.model.memory_bank, model.model.memory_bank)
    # Unfitted post-processor statistics are NaN in both.
    torch.testing.assert_close(dict(loaded.state_dict()), dict(model.state_dict()), rtol=0, atol=0, equal_nan=True)
