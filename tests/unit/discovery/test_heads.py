"""Projection MLP, cosine prototype heads and their k-means initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anomalib_ncd.discovery.heads import ProjectionMLP, PrototypeHeads, init_prototypes


def test_projection_mlp_layout_and_shape():
    mlp = ProjectionMLP(12, hidden_dim=16, out_dim=4, n_layers=3)
    kinds = [type(module) for module in mlp.mlp]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert [m.out_features for m in mlp.mlp if isinstance(m, nn.Linear)] == [16, 16, 4]
    assert mlp(torch.randn(3, 12)).shape == (3, 4)
    single = ProjectionMLP(12, out_dim=5, n_layers=1)
    assert [type(module) for module in single.mlp] == [nn.Linear]
    with pytest.raises(ValueError, match="n_layers"):
        ProjectionMLP(12, n_layers=0)


def test_projection_is_raw_not_normalised():
    torch.manual_seed(0)
    mlp = ProjectionMLP(8, hidden_dim=8, out_dim=8)
    norms = mlp(torch.randn(6, 8) * 50).norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms))


def test_prototypes_are_unit_and_logits_are_cosines():
    torch.manual_seed(0)
    heads = PrototypeHeads(in_dim=6, n_classes=4, n_heads=3)
    with torch.no_grad():
        heads.weight.mul_(7.0)  # raw norm must not matter
    prototypes = heads.prototypes()
    assert prototypes.shape == (3, 4, 6)
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(3, 4))
    features = torch.randn(5, 6) * 3
    logits = heads(features)
    assert logits.shape == (3, 5, 4)
    assert logits.abs().max() <= 1 + 1e-6
    expected = torch.stack([F.normalize(features, dim=1) @ prototypes[h].T for h in range(3)])
    torch.testing.assert_close(logits, expected)
    # a feature equal to a prototype has cosine 1 with it
    torch.testing.assert_close(heads(prototypes[1, 2:3] * 4)[1, 0, 2], torch.tensor(1.0))


def test_heads_are_independent():
    torch.manual_seed(0)
    heads = PrototypeHeads(in_dim=6, n_classes=4, n_heads=2)
    assert not torch.allclose(heads.prototypes()[0], heads.prototypes()[1])
    assert [name for name, _ in heads.named_parameters()] == ["weight"]


def test_gradient_changes_direction_only():
    torch.manual_seed(0)
    heads = PrototypeHeads(in_dim=5, n_classes=3, n_heads=2)
    heads(torch.randn(8, 5)).pow(2).sum().backward()
    grad = heads.weight.grad
    assert grad.abs().sum() > 0
    # gradient of a normalised weight is orthogonal to it: no first-order norm change
    radial = (grad * heads.weight.detach()).sum(dim=-1)
    torch.testing.assert_close(radial, torch.zeros_like(radial), atol=1e-6, rtol=0)


def test_heads_follow_input_dtype():
    heads = PrototypeHeads(in_dim=4, n_classes=2, n_heads=1).double()
    assert heads(torch.randn(3, 4, dtype=torch.float64)).dtype == torch.float64


def test_validation():
    with pytest.raises(ValueError, match="n_heads"):
        PrototypeHeads(4, 2, n_heads=0)


def clustered_features(seed=0, n_clusters=3, per_cluster=20, dim=8):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_clusters, dim, generator=generator), dim=1)
    points = centres.repeat_interleave(per_cluster, 0) + 0.05 * torch.randn(
        n_clusters * per_cluster, dim, generator=generator
    )
    return centres, points


def test_init_prototypes_recovers_clusters_and_is_deterministic():
    centres, points = clustered_features()
    heads = PrototypeHeads(in_dim=8, n_classes=3, n_heads=4)
    init_prototypes(heads, points, seed=5)
    prototypes = heads.prototypes().detach()
    for head in range(4):
        best = (prototypes[head] @ centres.T).max(dim=0).values
        assert best.min() > 0.99
    torch.testing.assert_close(heads.weight.norm(dim=-1), torch.ones(4, 3))
    again = PrototypeHeads(in_dim=8, n_classes=3, n_heads=4)
    init_prototypes(again, points, seed=5)
    torch.testing.assert_close(again.weight, heads.weight, rtol=0, atol=0)


def test_init_prototypes_heads_use_different_seeds():
    _, points = clustered_features(n_clusters=2, per_cluster=30)
    heads = PrototypeHeads(in_dim=8, n_classes=6, n_heads=2)  # more prototypes than clusters
    init_prototypes(heads, points, seed=0, n_iter=0)
    assert not torch.allclose(heads.weight[0], heads.weight[1])


def test_init_prototypes_validation_and_duplicates():
    heads = PrototypeHeads(in_dim=4, n_classes=3, n_heads=1)
    with pytest.raises(ValueError, match="shape"):
        init_prototypes(heads, torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least"):
        init_prototypes(heads, torch.randn(2, 4))
    init_prototypes(heads, torch.ones(5, 4))  # identical points: uniform fallback, no NaN
    assert torch.isfinite(heads.weight).all()


def test_init_prototypes_fixes_labeled_class_means():
    centres, points = clustered_features(seed=1, n_clusters=3, per_cluster=10)
    labels = torch.full((30,), -1)
    labels[20:25] = 0  # cluster 2 is labeled as class 0
    labels[:3] = 2  # cluster 0 is labeled as class 2
    heads = PrototypeHeads(in_dim=8, n_classes=4, n_heads=2)
    init_prototypes(heads, points, seed=3, labels=labels)
    unit = F.normalize(points, dim=1)
    for head in range(2):
        torch.testing.assert_close(heads.weight[head, 0], F.normalize(unit[20:25].mean(0), dim=0))
        torch.testing.assert_close(heads.weight[head, 2], F.normalize(unit[:3].mean(0), dim=0))
    # the free prototypes cover the unlabeled cluster 1
    free = heads.prototypes().detach()[:, [1, 3]]
    assert (free @ centres[1]).max() > 0.99
    with pytest.raises(ValueError, match="labels"):
        init_prototypes(heads, points, labels=torch.full((30,), 4))
    with pytest.raises(ValueError, match="labels"):
        init_prototypes(heads, points, labels=torch.zeros(29, dtype=torch.long))


def test_restarts_keep_the_best_spherical_kmeans_fit():
    # Ten seedings never fit worse than the first alone (the first is one of them).
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    points = torch.nn.functional.normalize(centres.repeat(20, 1) + 0.4 * torch.randn(160, 16), dim=1)

    def fit(n_init):
        heads = PrototypeHeads(in_dim=16, n_classes=8, n_heads=3)
        init_prototypes(heads, points, seed=0, n_init=n_init)
        return heads(points).max(dim=2).values.sum(dim=1)

    assert (fit(10) >= fit(1) - 1e-4).all()
    with pytest.raises(ValueError, match="n_init"):
        init_prototypes(PrototypeHeads(in_dim=16, n_classes=8, n_heads=1), points, n_init=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(bad):
    # a NaN fit is never better than -inf: it used to leave no best run (AttributeError on None)
    points = torch.randn(12, 4)
    points[3, 1] = bad
    heads = PrototypeHeads(in_dim=4, n_classes=3, n_heads=1)
    before = heads.weight.detach().clone()
    with pytest.raises(ValueError, match="finite"):
        init_prototypes(heads, points, seed=0)
    assert torch.equal(heads.weight.detach(), before)
