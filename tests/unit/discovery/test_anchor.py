"""The anchor: the heads cluster the masked-pooled frozen descriptor together with the learned feature."""

from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch.nn import functional as F

from anomalib_ncd.discovery.backbone import CNNTokenBackbone
from anomalib_ncd.discovery.guidance import GuidanceSettings
from anomalib_ncd.discovery.heads import init_prototypes
from anomalib_ncd.discovery.network import DiscoveryNetwork
from anomalib_ncd.discovery.novelty import anomaly_pooled

GRID = 7  # 112-px views of a stride-16 CNN


def _network(anchor: bool, n_classes: int = 3) -> DiscoveryNetwork:
    torch.manual_seed(0)
    # the papers' soft guidance: without the anchor, its CLS token sees mostly the surface
    guidance = GuidanceSettings(mode="soft_rgf")
    backbone = CNNTokenBackbone("mobilenetv2_100", pretrained=False, input_size=16 * GRID, dim=32, guidance=guidance)
    return DiscoveryNetwork(backbone, n_classes, n_heads=2, projection_hidden=64, projection_dim=16, anchor=anchor)


def _small_defects(network: DiscoveryNetwork, per_class: int = 30, seed: int = 0):
    """Tokens whose class lives in 2 of 49 patches (the defect) and a strong nuisance elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    n_patches, dim = GRID * GRID, network.backbone.token_dim
    signatures = torch.randn(3, dim, generator=generator).abs() * 2.0
    surfaces = torch.randn(5, dim, generator=generator).abs() * 2.0
    tokens, anomaly, labels = [], [], []
    for label in range(3):
        for _ in range(per_class):
            surface = surfaces[torch.randint(0, 5, (1,), generator=generator)]
            view = surface + 0.3 * torch.randn(n_patches, dim, generator=generator)
            where = torch.randperm(n_patches, generator=generator)[:2]
            view[where] = signatures[label] + 0.3 * torch.randn(2, dim, generator=generator)
            cover = torch.zeros(n_patches)
            cover[where] = 1.0
            tokens.append(view)
            anomaly.append(cover)
            labels.append(label)
    return torch.stack(tokens).abs(), torch.stack(anomaly), torch.tensor(labels)


def _centred_anchor(tokens, anomaly):
    pooled = anomaly_pooled(tokens, anomaly)
    return F.normalize(pooled - pooled.mean(dim=0), dim=1)


def test_untrained_feature_is_the_centred_masked_pooled_descriptor():
    network = _network(True)
    tokens, anomaly, _ = _small_defects(network, per_class=4)
    network.set_anchor_mean(anomaly_pooled(tokens, anomaly))
    features = network.embed(tokens, anomaly)
    assert features.shape == (len(tokens), network.backbone.token_dim) == (len(tokens), network.out_dim)
    assert torch.allclose(features, _centred_anchor(tokens, anomaly), atol=1e-6)


def test_without_anchor_the_feature_is_the_cls_feature():
    network = _network(False)
    tokens, anomaly, _ = _small_defects(network, per_class=2)
    assert network.out_dim == network.backbone.out_dim
    assert not hasattr(network, "residual")
    assert torch.equal(network.embed(tokens, anomaly), network.backbone.tail(tokens, anomaly))


def test_training_adds_the_learned_residual_and_leaves_the_anchor():
    network = _network(True)
    tokens, anomaly, _ = _small_defects(network, per_class=2)
    network.set_anchor_mean(anomaly_pooled(tokens, anomaly))
    optimiser = torch.optim.SGD(network.parameters(), lr=0.1)
    network.embed(tokens, anomaly)[:, 0].sum().backward()
    assert network.residual.weight.grad.abs().sum() > 0  # the residual learns from the first step
    optimiser.step()
    moved = network.embed(tokens, anomaly)
    residual = network.residual(network.backbone.tail(tokens, anomaly))
    assert residual.abs().sum() > 0
    assert torch.allclose(moved - residual, _centred_anchor(tokens, anomaly), atol=1e-6)


def test_the_anchor_centre_is_saved_with_the_weights():
    network = _network(True)
    tokens, anomaly, _ = _small_defects(network, per_class=2)
    network.set_anchor_mean(anomaly_pooled(tokens, anomaly))
    restored = _network(True)
    restored.load_state_dict(network.state_dict())
    assert torch.equal(restored.anchor_mean, network.anchor_mean)
    assert restored.anchor_mean.abs().sum() > 0


@pytest.mark.parametrize("anchor", [False, True])
def test_an_untrained_model_clusters_small_defects_like_the_masked_pooling_baseline(anchor):
    # The floor by construction: before any training, the heads (prototypes from spherical k-means
    # of the features) already separate what masked pooling + k-means separates. Without the
    # anchor, the random tail sees mostly the surface and is far below.
    network = _network(anchor)
    tokens, anomaly, labels = _small_defects(network)
    baseline = KMeans(3, n_init=10, random_state=0).fit_predict(
        F.normalize(anomaly_pooled(tokens, anomaly), dim=1).numpy()
    )
    baseline_nmi = normalized_mutual_info_score(labels, baseline)
    assert baseline_nmi > 0.9  # the set is built so that masked pooling separates it
    with torch.no_grad():
        network.set_anchor_mean(anomaly_pooled(tokens, anomaly))
        features = network.embed(tokens, anomaly)
        init_prototypes(network.heads, features, seed=0)
        predicted = network.heads(features)[0].argmax(1)
    nmi = normalized_mutual_info_score(labels, predicted)
    if anchor:
        assert nmi >= baseline_nmi - 0.05
    else:
        assert nmi < baseline_nmi - 0.2


def test_a_checkpoint_from_before_the_anchor_loads_as_the_model_it_was(tmp_path):
    # Older checkpoints have no "anchor" hyper-parameter: they were trained without it, with soft_rgf.
    from lightning.pytorch import Trainer

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from tests.unit.discovery.test_model_lightning import make_model, region_list

    model = make_model(epochs=1, anchor=False, guidance={"mode": "soft_rgf"})
    model.prepare(region_list(n_defects=4, n_whole=0))
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["hyper_parameters"]["anchor"]
    checkpoint["hyper_parameters"]["guidance"] = None
    torch.save(checkpoint, path)
    loaded = AnomalyNCD.load_from_checkpoint(path)
    assert loaded.network.anchor is False
    assert loaded.guidance_settings.mode == "soft_rgf"
    current = tmp_path / "current.ckpt"
    trainer.save_checkpoint(current)
    assert AnomalyNCD.load_from_checkpoint(current).network.anchor is False  # recorded, not guessed
