"""Area-weighted region fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomalib_ncd.discovery.fusion import fuse_predictions, fuse_regions


def loop_fuse(probs, areas, image_index, n_images, temperature):
    fused = []
    for image in range(n_images):
        rows = [i for i, owner in enumerate(image_index) if owner == image]
        exps = [math.exp(math.sqrt(areas[i]) / temperature) for i in rows]
        total = sum(exps)
        fused.append(
            [sum(e / total * probs[i][k] for e, i in zip(exps, rows, strict=True)) for k in range(len(probs[0]))]
        )
    return np.array(fused)


def test_single_region_is_identity():
    probs = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]])
    np.testing.assert_allclose(fuse_regions(probs, [50, 900], [1, 0], 2), probs[::-1])


def test_equal_areas_give_mean():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(fuse_regions(probs, [40, 40, 40], [0, 0, 0], 1), [[0.5, 0.5]])


def test_matches_loop_reference():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=9)
    areas = rng.integers(1, 5000, size=9).astype(float)
    index = [0, 2, 2, 1, 0, 2, 3, 1, 1]
    fused = fuse_regions(probs, areas, index, 4, temperature=30.0)
    np.testing.assert_allclose(fused, loop_fuse(probs, areas, index, 4, 30.0), rtol=1e-12)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)


def test_temperature_limits():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    areas = [10_000, 100]
    np.testing.assert_allclose(fuse_regions(probs, areas, [0, 0], 1, temperature=1e-3), [[1.0, 0.0]])
    np.testing.assert_allclose(fuse_regions(probs, areas, [0, 0], 1, temperature=1e-300), [[1.0, 0.0]])
    np.testing.assert_allclose(fuse_regions(probs, areas, [0, 0], 1, temperature=1e12), [[0.5, 0.5]])
    np.testing.assert_allclose(fuse_regions(probs, areas, [0, 0], 1, temperature=np.inf), [[0.5, 0.5]])
    # Large areas at the paper's temperature: no overflow.
    big = fuse_regions(probs, [1e12, 1e10], [0, 0], 1, temperature=50.0)
    assert np.all(np.isfinite(big))


def test_tied_largest_regions_share_weight_at_small_temperature():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    fused = fuse_regions(probs, [400, 400, 1], [0, 0, 0], 1, temperature=1e-6)
    np.testing.assert_allclose(fused, [[0.5, 0.5]])


def test_image_without_region_raises():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"2 image\(s\) without any region: 1, 3"):
        fuse_regions(probs, [1, 1], [0, 2], 4)


def test_invalid_inputs_raise():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="temperature"):
        fuse_regions(probs, [1, 1], [0, 0], 1, temperature=0.0)
    with pytest.raises(ValueError, match="areas"):
        fuse_regions(probs, [1, -1], [0, 0], 1)
    with pytest.raises(ValueError, match="image_index"):
        fuse_regions(probs, [1, 1], [0, 1], 1)
    with pytest.raises(ValueError, match="image_index"):
        fuse_regions(probs, [1, 1], [0, 0.5], 1)
    with pytest.raises(ValueError, match="expected"):
        fuse_regions(probs, [1, 1, 1], [0, 0, 0], 1)


def test_accepts_tensors_and_returns_numpy():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.bfloat16)
    fused = fuse_regions(probs, torch.tensor([4.0, 4.0, 9.0]), torch.tensor([0, 0, 1]), 2)
    assert isinstance(fused, np.ndarray) and fused.dtype == np.float64
    expected = fuse_regions(probs.double().numpy(), [4, 4, 9], [0, 0, 1], 2)
    np.testing.assert_allclose(fused, expected)


def test_fuse_predictions_labels_and_confidence():
    probs = np.array([[0.6, 0.4, 0.0], [0.0, 0.2, 0.8], [0.2, 0.5, 0.3]])
    labels, confidence = fuse_predictions(probs, [100, 100, 1], [0, 0, 1], 2, temperature=100.0)
    np.testing.assert_array_equal(labels, [2, 1])
    np.testing.assert_allclose(confidence, [0.4, 0.5])
    assert labels.dtype == np.int64


def test_empty_input():
    fused = fuse_regions(np.zeros((0, 3)), [], [], 0)
    assert fused.shape == (0, 3)
