"""PRN's modules against straightforward references: residuals, patch tokens, attention sizes, loss, k-means."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from anomalib_ncd.models.prn.anomaly_generator import AnomalyGenerator, RealAnomaly
from anomalib_ncd.models.prn.lightning_model import kmeans_maps, select_real_samples
from anomalib_ncd.models.prn.loss import PrnLoss, focal_loss
from anomalib_ncd.models.prn.torch_model import (
    MultiSizeAttention,
    PrnModel,
    nearest_prototype_residual,
    patch_tokens,
    spread_tokens,
)


def test_residual_equals_a_brute_force_loop():
    torch.manual_seed(0)
    features, prototypes = torch.randn(2, 3, 4, 5), torch.randn(6, 3, 4, 5)
    expected = torch.empty_like(features)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                distances = [float(((features[b, :, y, x] - prototypes[k, :, y, x]) ** 2).sum()) for k in range(6)]
                k = int(np.argmin(distances))
                expected[b, :, y, x] = (features[b, :, y, x] - prototypes[k, :, y, x]) ** 2
    torch.testing.assert_close(nearest_prototype_residual(features, prototypes), expected, rtol=1e-5, atol=1e-5)
    # a feature equal to a prototype has no residual
    assert nearest_prototype_residual(prototypes[2:3], prototypes).abs().max() < 1e-5


def test_patch_tokens_are_patch_means_in_row_major_order_and_spread_back():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    tokens = patch_tokens(x, 4)
    assert tokens.shape == (2, 4, 3)
    for row in range(2):
        for col in range(2):
            torch.testing.assert_close(
                tokens[:, row * 2 + col], x[:, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4].mean((2, 3))
            )
    spread = spread_tokens(tokens, 4, 8, 8)
    torch.testing.assert_close(spread[:, :, 5, 6], tokens[:, 3])
    torch.testing.assert_close(spread[:, :, 0, 3], tokens[:, 0])


def test_multi_size_attention_sizes_and_shape():
    attention = MultiSizeAttention(8, 16, divisors=(1, 2, 4, 8))
    assert attention.patches == [16, 8, 4, 2]  # patch sides H, H/2, H/4, H/8
    assert [p.shape[1] for p in attention.position] == [1, 4, 16, 64]  # tokens per size
    assert attention(torch.randn(2, 8, 16, 16)).shape == (2, 8, 16, 16)
    with pytest.raises(ValueError, match="divide"):
        MultiSizeAttention(8, 12, divisors=(1, 8))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PrnModel("mobilenetv2_100", ["blocks.1", "blocks.2", "blocks.4"], pre_trained=False, input_size=64)


def test_model_shapes_and_score(model):
    assert model.feature_shapes == [(24, 16, 16), (32, 8, 8), (96, 4, 4)]
    with pytest.raises(RuntimeError, match="prototypes"):
        model.logits(torch.rand(1, 3, 64, 64))
    model.set_prototypes([torch.randn(3, *shape) for shape in model.feature_shapes])
    model.train()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)
    model.eval()
    out = model(torch.rand(2, 3, 64, 64))
    assert out.anomaly_map.shape == (2, 1, 64, 64)
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 1
    expected = out.anomaly_map.flatten(1).sort(descending=True).values[:, :100].mean(1)
    torch.testing.assert_close(out.pred_score, expected)
    with pytest.raises(ValueError, match="shape"):
        model.set_prototypes([torch.randn(3, 1, 2, 2)] * 3)


def test_focal_and_smooth_l1_by_hand():
    logits = torch.tensor([[[[0.0, 2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    p = torch.sigmoid(logits)[0, 0, 0].tolist()
    p_t = [p[0], p[1], 1 - p[2]]
    alpha_t = [0.5, 0.5, 0.5]
    expected_focal = sum(-a * (1 - q) ** 4 * math.log(q) for a, q in zip(alpha_t, p_t, strict=True)) / 3
    assert focal_loss(logits, target).item() == pytest.approx(expected_focal, rel=1e-5)
    errors = [abs(p[0] - 1), abs(p[1] - 1), abs(p[2])]
    expected_smooth = sum(0.5 * e**2 if e < 1 else e - 0.5 for e in errors) / 3
    assert PrnLoss()(logits, target).item() == pytest.approx(expected_smooth + 5 * expected_focal, rel=1e-5)
    # a confident right answer costs almost nothing, a confident wrong one a lot
    assert PrnLoss()(torch.full((1, 1, 2, 2), 9.0), torch.ones(1, 1, 2, 2)) < 1e-3
    assert PrnLoss()(torch.full((1, 1, 2, 2), -9.0), torch.ones(1, 1, 2, 2)) > 1.0


def test_kmeans_maps_finds_separated_groups_and_is_seeded():
    torch.manual_seed(0)
    centres = torch.randn(3, 2, 2, 2) * 10
    maps = torch.cat([c + 0.01 * torch.randn(5, 2, 2, 2) for c in centres])
    found = kmeans_maps(maps, 3, seed=1)
    distances = torch.cdist(found.flatten(1), centres.flatten(1))
    assert distances.min(1).values.max() < 0.1
    torch.testing.assert_close(found, kmeans_maps(maps, 3, seed=1))
    assert kmeans_maps(maps, 50, seed=0).shape[0] == 15  # no more centres than maps


def scene(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.3, 0.6, size=(64, 64, 3)).astype(np.float32)
    defect_mask = np.zeros((64, 64), bool)
    defect_mask[20:30, 25:40] = True
    defect = image.copy()
    defect[defect_mask] = [0.95, 0.1, 0.1]
    return image, RealAnomaly(defect, defect_mask, "red")


@pytest.mark.parametrize("kind", ["real", "extended", "simulated"])
def test_generator_masks_are_exactly_the_changed_pixels(kind):
    image, real = scene()
    generator = AnomalyGenerator([real], seed=4)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    for _ in range(6):
        if kind == "real":
            out, mask = generator.real_sample((64, 64))
            np.testing.assert_array_equal(mask, real.mask)
            continue
        out, mask = getattr(generator, kind)(image)
        changed = np.any(np.abs(out - image) > 1e-6, axis=2)
        np.testing.assert_array_equal(mask, changed)
        assert mask.any()
    sample, sample_mask, _ = generator(tensor)
    assert sample.shape == tensor.shape and sample_mask.shape == (1, 64, 64)


def test_generator_ratio_and_determinism():
    image, real = scene()
    unsupervised = AnomalyGenerator([], ratio=(2, 1, 1), seed=0)
    np.testing.assert_allclose(unsupervised.probabilities, [0.5, 0, 0, 0.5])
    supervised = AnomalyGenerator([real], ratio=(2, 1, 1), seed=0)
    np.testing.assert_allclose(supervised.probabilities, [0.5, 0.125, 0.125, 0.25])
    kinds = [supervised.choose() for _ in range(2000)]
    assert abs(kinds.count("normal") / 2000 - 0.5) < 0.05
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    first = AnomalyGenerator([real], seed=7)(tensor)
    second = AnomalyGenerator([real], seed=7)(tensor)
    torch.testing.assert_close(first[0], second[0])
    with pytest.raises(ValueError, match="ratio"):
        AnomalyGenerator([], ratio=(1, 1))


def test_real_sample_selection(tmp_path):
    import cv2

    rows = []
    for kind in ("a", "b"):
        for index in range(3):
            image, mask = tmp_path / f"{kind}{index}.png", tmp_path / f"{kind}{index}_mask.png"
            cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
            cv2.imwrite(str(mask), np.zeros((8, 8), np.uint8))
            rows.append({"image_path": str(image), "mask_path": str(mask), "defect_type": kind})
    csv = tmp_path / "real.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    chosen = select_real_samples(csv, 2, seed=0)
    assert chosen["defect_type"].value_counts().to_dict() == {"a": 2, "b": 2}
    pd.testing.assert_frame_equal(chosen, select_real_samples(csv, 2, seed=0))
    assert select_real_samples(csv, 0, seed=0).empty
    with pytest.raises(ValueError, match="only 3"):
        select_real_samples(csv, 4, seed=0)
    with pytest.raises(FileNotFoundError):
        select_real_samples(tmp_path / "none.csv", 1, seed=0)
    (tmp_path / "b0_mask.png").unlink()
    (tmp_path / "b1_mask.png").unlink()
    (tmp_path / "b2_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="mask_path"):
        select_real_samples(csv, 1, seed=0)


def test_prn_arguments_are_checked():
    from anomalib_ncd.models import Prn

    with pytest.raises(ValueError, match="anomalous_samples"):
        Prn(backbone="mobilenetv2_100", pre_trained=False, n_real_per_type=2)
    with pytest.raises(ValueError, match="feature layers"):
        Prn(backbone="convnext_tiny", pre_trained=False)
    with pytest.raises(ValueError, match="prototype_fraction"):
        Prn(backbone="mobilenetv2_100", pre_trained=False, prototype_fraction=0)
