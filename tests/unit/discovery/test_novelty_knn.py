"""The ``"knn"`` unknown score: anomaly-pooled frozen descriptors and their distance to the training regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.discovery.novelty import ROUNDING, NoveltySettings, anomaly_pooled, knn_scores
from anomalib_ncd.regions.extract import extract_regions
from anomalib_ncd.regions.soft import regions_without_anomaly
from tests.unit.discovery.test_model_lightning import fit, make_model, make_scene


def test_anomaly_pooling_weights_patches_by_coverage():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    coverage = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    pooled = anomaly_pooled(tokens, coverage)
    expected_first = (tokens[0, 0] * 1.0 + tokens[0, 1] * 0.5) / 1.5
    torch.testing.assert_close(pooled[0], expected_first)
    torch.testing.assert_close(pooled[1], tokens[1].mean(0))  # nothing covered (a whole image): plain mean


def test_anomaly_pooling_skips_a_leading_cls_token():
    patches = torch.rand(3, 4, 5)
    with_cls = torch.cat([torch.full((3, 1, 5), 100.0), patches], dim=1)
    coverage = torch.rand(3, 4)
    torch.testing.assert_close(anomaly_pooled(with_cls, coverage), anomaly_pooled(patches, coverage))


def brute_force_knn(queries: np.ndarray, bank: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    """Cosine distance to the k-th nearest bank row, by sorting every distance (the definition)."""
    out = []
    for query in queries:
        distances = sorted(1.0 - float(query @ row) / (np.linalg.norm(query) * np.linalg.norm(row)) for row in bank)
        out.append(distances[min(k + int(skip_self), len(bank)) - 1])
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize(("k", "skip_self"), [(1, False), (3, False), (2, True), (50, False)])
def test_knn_scores_match_brute_force(k, skip_self):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(20, 6)).astype(np.float32)
    queries = bank[:7] if skip_self else rng.normal(size=(7, 6)).astype(np.float32)
    found = knn_scores(torch.from_numpy(queries), torch.from_numpy(bank), k, skip_self=skip_self)
    np.testing.assert_allclose(found, brute_force_knn(queries, bank, k, skip_self), atol=1e-5)


def test_knn_scores_rank_a_far_region_most_unknown_and_an_empty_bank_scores_nan():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.95, -0.05]])
    scores = knn_scores(torch.tensor([[1.0, 0.02], [0.0, 1.0]]), bank, k=2)
    assert scores[0] < 0.01 < 0.9 < scores[1]
    assert np.isnan(knn_scores(torch.ones(2, 2), torch.zeros(0, 0), k=1)).all()


def test_settings_check_k():
    assert NoveltySettings(score="knn", k=3).k == 3
    with pytest.raises(ValueError, match="k must be >= 1"):
        NoveltySettings(score="knn", k=0)
    with pytest.raises(ValueError, match="novelty score"):
        NoveltySettings(score="mahalanobis")


@pytest.fixture(scope="module")
def knn_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("novelty_knn")
    images, maps, _, map_set = make_scene(root)
    region_set = extract_regions(map_set)
    seed_everything(0, verbose=False)
    model = make_model(epochs=1, novelty={"score": "knn", "k": 2, "quantile": 0.3})
    model.prepare(region_set)
    trainer = fit(model, root=root, epochs=1)
    return {"model": model, "trainer": trainer, "images": images, "maps": maps, "regions": list(region_set)}


def test_training_fills_the_bank_with_the_found_regions_and_calibrates(knn_scene):
    model, regions = knn_scene["model"], knn_scene["regions"]
    found_regions = [region for region, no in zip(regions, regions_without_anomaly(regions), strict=True) if not no]
    assert model.novelty_bank.shape == (len(found_regions), model.cache.tokens.shape[-1])
    assert np.isfinite(float(model.unknown_threshold))
    result = model.discover()
    whole = regions_without_anomaly(regions)  # nothing found, or soft regions the detector calls normal
    # the training regions' scores skip themselves: the k+1-th neighbour in the bank
    descriptors = anomaly_pooled(model.cache.tokens[:, 0], model.cache.anomaly[:, 0])
    expected = knn_scores(descriptors[~torch.from_numpy(whole)], model.novelty_bank, 2, skip_self=True)
    np.testing.assert_allclose(result.region_unknown_score[~whole], expected, atol=1e-6)
    threshold = float(model.unknown_threshold)
    assert threshold == pytest.approx(np.quantile(expected, 0.7, method="inverted_cdf"))
    margin = ROUNDING * max(1.0, abs(threshold))  # a training score equal to its threshold is not unknown
    np.testing.assert_array_equal(result.region_is_unknown[~whole], expected > threshold + margin)
    assert int(result.region_is_unknown.sum()) <= int(0.3 * len(found_regions))


def test_new_images_are_scored_against_the_bank_and_the_checkpoint_keeps_it(knn_scene, tmp_path):
    model, trainer = knn_scene["model"], knn_scene["trainer"]
    found = model.classify_images(knn_scene["images"], knn_scene["maps"])
    whole = regions_without_anomaly(found.regions)
    assert found.region_descriptors.shape == (len(found.regions), model.novelty_bank.shape[1])
    expected = knn_scores(torch.from_numpy(found.region_descriptors[~whole]), model.novelty_bank, 2)
    np.testing.assert_allclose(found.region_unknown_score[~whole], expected, atol=1e-6)
    path = tmp_path / "knn.ckpt"
    trainer.save_checkpoint(path)
    loaded = AnomalyNCD.load_from_checkpoint(path)
    torch.testing.assert_close(loaded.novelty_bank, model.novelty_bank)
    again = loaded.classify_images(knn_scene["images"], knn_scene["maps"])
    np.testing.assert_array_equal(again.is_unknown, found.is_unknown)
    np.testing.assert_allclose(again.region_unknown_score, found.region_unknown_score, atol=1e-5)


def test_a_prototype_score_model_keeps_an_empty_bank(knn_scene):
    model = knn_scene["model"]
    vmf = make_model(epochs=1)
    vmf.load_state_dict({k: v for k, v in model.state_dict().items() if k != "novelty_bank"})
    assert vmf.novelty_bank.numel() == 0  # a checkpoint without a bank (or from before it) loads with none
    with pytest.raises(ValueError, match="descriptors"):
        model.score_unknown(np.zeros((1, 4)))
