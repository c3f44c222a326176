"""Anomaly-guided attention: the CLS-row mask, its weights, and its effect on a real timm block."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import Block

from anomalib_ncd.discovery.backbone import cls_only_block
from anomalib_ncd.discovery.guidance import (
    GuidanceSettings,
    cls_attention_mask,
    guided_mean,
    patch_weights,
    pool_to_patches,
    relative_coverage,
)

HARD = GuidanceSettings(mode="hard", hard_threshold=0.5)
SOFT = GuidanceSettings(mode="soft", normal_weight=0.2)
RGF = GuidanceSettings(mode="soft_rgf", object_weight=0.3, background_weight=0.02)


def coverage(batch=3, n_patches=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(batch, n_patches, generator=generator)
    values[values < 0.3] = 0.0  # some patches without any anomaly
    return values


def loop_relative(row):
    peak = max(row)
    return [value / peak if peak > 0 else 0.0 for value in row]


# ------------------------------------------------------------------------------ settings, pooling


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "gaussian"}, "mode"),
        ({"n_layers": -1}, "n_layers"),
        ({"normal_weight": 0.0}, "normal_weight"),
        ({"object_weight": 1.5}, "object_weight"),
        ({"background_weight": -0.1}, "background_weight"),
    ],
)
def test_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GuidanceSettings(**kwargs)


def test_pool_to_patches_is_the_covered_fraction_in_token_order():
    mask = torch.zeros(1, 8, 8)
    mask[0, 0:4, 4:8] = 1.0  # the top-right patch of a 2x2 grid, fully
    mask[0, 4:6, 0:4] = 1.0  # half of the bottom-left patch
    torch.testing.assert_close(pool_to_patches(mask, (2, 2)), torch.tensor([[0.0, 1.0, 0.5, 0.0]]))


# ----------------------------------------------------------------------------- relative coverage


def test_relative_coverage_divides_by_the_row_maximum_and_keeps_empty_rows_zero():
    anomaly = torch.tensor([[0.1, 0.2, 0.05, 0.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.6, 0.6, 0.15]])
    result = relative_coverage(anomaly)
    expected = torch.tensor([loop_relative(row) for row in anomaly.tolist()])
    torch.testing.assert_close(result, expected)
    assert torch.equal(result[1], torch.zeros(4))
    assert torch.equal(result.amax(dim=1), torch.tensor([1.0, 0.0, 1.0]))


# ---------------------------------------------------------------------------------- the CLS mask


def test_mode_none_gives_no_mask_and_unit_weights():
    anomaly = coverage()
    settings = GuidanceSettings(mode="none")
    assert cls_attention_mask(anomaly, settings) is None
    assert torch.equal(patch_weights(anomaly, settings), torch.ones_like(anomaly))


@pytest.mark.parametrize("settings", [HARD, SOFT, RGF])
def test_only_the_cls_query_row_is_masked_and_the_cls_key_is_free(settings):
    anomaly = coverage()
    mask = cls_attention_mask(anomaly, settings)
    assert mask.shape == (3, 1, 17, 17)
    assert mask.dtype == anomaly.dtype
    assert torch.equal(mask[:, :, 1:], torch.zeros(3, 1, 16, 17))  # patch queries attend as usual
    assert torch.equal(mask[:, 0, :, 0], torch.zeros(3, 17))  # nobody is ever kept from the CLS key
    assert not torch.isnan(mask).any()
    assert (mask <= 0).all()  # weights never exceed 1


def test_hard_mask_blocks_exactly_the_patches_below_the_relative_threshold():
    anomaly = coverage(seed=1)
    mask = cls_attention_mask(anomaly, HARD)
    for b, row in enumerate(anomaly.tolist()):
        for j, value in enumerate(loop_relative(row)):
            expected = -math.inf if value < 0.5 else 0.0
            assert mask[b, 0, 0, 1 + j].item() == expected, (b, j, value)
    # the threshold is inclusive: a patch at exactly half the peak stays visible
    exact = cls_attention_mask(torch.tensor([[0.25, 0.5, 0.2]]), HARD)
    assert exact[0, 0, 0].tolist() == [0.0, 0.0, 0.0, -math.inf]


def test_hard_mask_relative_coverage_keeps_a_thin_defect_visible():
    # a crack covering at most 10 % of any patch: absolute coverage would hide it completely
    thin = torch.tensor([[0.0, 0.1, 0.08, 0.02]])
    assert cls_attention_mask(thin, HARD)[0, 0, 0].tolist() == [0.0, -math.inf, 0.0, 0.0, -math.inf]


def test_soft_weights_follow_the_formula():
    anomaly = coverage(seed=2)
    mask = cls_attention_mask(anomaly, SOFT)
    rho = SOFT.normal_weight
    for b, row in enumerate(anomaly.tolist()):
        expected = [0.0] + [math.log(a + (1 - a) * rho) for a in loop_relative(row)]
        torch.testing.assert_close(mask[b, 0, 0], torch.tensor(expected))
    weights = patch_weights(anomaly, SOFT)
    assert (weights >= rho - 1e-7).all()
    assert (weights <= 1).all()


def test_soft_rgf_splits_the_normal_part_by_the_object_prior():
    # patches: anomaly, normal object, background, half-object normal, anomaly on background
    anomaly = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0]])
    obj = torch.tensor([[1.0, 1.0, 0.0, 0.5, 0.0]])
    weights = patch_weights(anomaly, RGF, obj)
    rho_o, rho_b = RGF.object_weight, RGF.background_weight
    expected = torch.tensor([[1.0, rho_o, rho_b, 0.5 * rho_o + 0.5 * rho_b, 1.0]])
    torch.testing.assert_close(weights, expected)
    mask = cls_attention_mask(anomaly, RGF, obj)
    torch.testing.assert_close(mask[0, 0, 0], torch.log(torch.cat([torch.ones(1), expected[0]])))

    fractional = coverage(seed=3)
    prior = coverage(seed=4).clamp(0, 1)
    rel = relative_coverage(fractional)
    reference = rel + (1 - rel) * (prior * rho_o + (1 - prior) * rho_b)
    torch.testing.assert_close(patch_weights(fractional, RGF, prior), reference)


def test_soft_rgf_without_object_prior_is_soft_with_the_object_weight():
    anomaly = coverage(seed=5)
    rgf = GuidanceSettings(mode="soft_rgf", object_weight=0.25, background_weight=0.01)
    soft = GuidanceSettings(mode="soft", normal_weight=0.25)
    torch.testing.assert_close(cls_attention_mask(anomaly, rgf), cls_attention_mask(anomaly, soft), rtol=0, atol=0)


def test_an_empty_anomaly_mask_still_gives_a_finite_attention_row():
    empty = torch.zeros(2, 9)
    hard = cls_attention_mask(empty, HARD)
    assert hard[:, 0, 0, 0].eq(0).all()
    assert torch.isneginf(hard[:, 0, 0, 1:]).all()  # the CLS token sees only itself
    assert torch.isfinite(torch.softmax(torch.randn(2, 10) + hard[:, 0, 0], dim=-1)).all()
    soft = cls_attention_mask(empty, SOFT)
    patch_row = soft[:, 0, 0, 1:]
    assert torch.isfinite(patch_row).all()
    torch.testing.assert_close(patch_row, torch.full_like(patch_row, math.log(SOFT.normal_weight)))


# ---------------------------------------------------------------------- effect on a timm block


def make_block(init_values=None, qk_norm=False, seed=0):
    torch.manual_seed(seed)
    block = Block(dim=32, num_heads=4, init_values=init_values, qk_norm=qk_norm).eval()
    if init_values is not None:  # a LayerScale far from 1 and not uniform, so it matters
        with torch.no_grad():
            block.ls1.gamma.uniform_(0.2, 2.0)
            block.ls2.gamma.uniform_(0.2, 2.0)
    return block


def tokens(batch=2, n_patches=16, seed=1):
    return torch.randn(batch, 1 + n_patches, 32, generator=torch.Generator().manual_seed(seed))


def partial_anomaly(batch=2, n_patches=16):
    anomaly = torch.zeros(batch, n_patches)
    anomaly[:, 5] = 1.0
    anomaly[:, 6] = 0.7
    anomaly[:, 9] = 0.3  # below the hard threshold
    return anomaly


def cls_probabilities(block, x, mask):
    """CLS-query attention probabilities of each head, computed from the block's own weights."""
    attn = block.attn
    normed = block.norm1(x)
    qkv = attn.qkv(normed).reshape(x.shape[0], x.shape[1], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    logits = (q @ k.transpose(-2, -1)) * attn.scale + mask
    return torch.softmax(logits, dim=-1)[:, :, 0]  # (B, heads, 1 + N)


@pytest.mark.parametrize("settings", [HARD, SOFT, RGF])
@torch.no_grad()
def test_an_all_anomalous_region_is_the_plain_block(settings):
    block, x = make_block(), tokens()
    mask = cls_attention_mask(torch.ones(2, 16), settings)
    assert torch.equal(mask, torch.zeros_like(mask))
    torch.testing.assert_close(block(x, attn_mask=mask), block(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("settings", [HARD, SOFT, RGF])
@torch.no_grad()
def test_guidance_changes_the_cls_output_only(settings):
    block, x = make_block(init_values=1e-1), tokens()
    mask = cls_attention_mask(partial_anomaly(), settings)
    guided, plain = block(x, attn_mask=mask), block(x)
    torch.testing.assert_close(guided[:, 1:], plain[:, 1:], rtol=0, atol=1e-6)
    assert (guided[:, 0] - plain[:, 0]).abs().amax(dim=-1).min() > 1e-4


@torch.no_grad()
def test_hard_guidance_gives_blocked_keys_zero_attention():
    block, x = make_block(), tokens()
    anomaly = partial_anomaly()
    mask = cls_attention_mask(anomaly, HARD)
    probabilities = cls_probabilities(block, x, mask)
    visible = torch.cat([torch.ones(2, 1, dtype=torch.bool), relative_coverage(anomaly) >= 0.5], dim=1)
    assert visible.sum().item() == 2 * 3  # CLS and patches 5 and 6; patch 9 (0.3 of the peak) is blocked
    blocked_probabilities = probabilities[~visible[:, None].expand_as(probabilities)]
    assert blocked_probabilities.numel() == 2 * 4 * 14
    assert blocked_probabilities.eq(0).all()
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 4))
    assert (probabilities[visible[:, None].expand_as(probabilities)] > 0).all()

    # perturbation: a blocked patch token's value cannot reach the CLS output of the attention
    blocked, seen = 1 + 9, 1 + 5
    reference = block.attn(block.norm1(x), attn_mask=mask)[:, 0]
    moved = x.clone()
    moved[:, blocked] += 5.0 * torch.randn(2, 32, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(block.attn(block.norm1(moved), attn_mask=mask)[:, 0], reference, rtol=0, atol=1e-6)
    moved_seen = x.clone()
    moved_seen[:, seen] += 5.0 * torch.randn(2, 32, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(block.attn(block.norm1(moved_seen), attn_mask=mask)[:, 0], reference, atol=1e-4)


@torch.no_grad()
def test_soft_guidance_multiplies_the_attention_by_the_weights_and_renormalises():
    block, x = make_block(), tokens()
    anomaly = partial_anomaly()
    guided = cls_probabilities(block, x, cls_attention_mask(anomaly, SOFT))
    plain = cls_probabilities(block, x, torch.zeros(1))
    weights = torch.cat([torch.ones(2, 1), patch_weights(anomaly, SOFT)], dim=1)[:, None]
    expected = plain * weights / (plain * weights).sum(-1, keepdim=True)
    torch.testing.assert_close(guided, expected)


@pytest.mark.parametrize("mode", ["none", "hard", "soft", "soft_rgf", "balanced"])
@pytest.mark.parametrize("qk_norm", [False, True])
@torch.no_grad()
def test_cls_only_block_equals_the_full_block_cls_row(mode, qk_norm):
    block, x = make_block(init_values=0.5, qk_norm=qk_norm), tokens(batch=3)
    anomaly = torch.cat([partial_anomaly(), torch.zeros(1, 16)])  # the last region is empty
    obj = torch.linspace(0, 1, 16).expand(3, 16)
    mask = cls_attention_mask(anomaly, GuidanceSettings(mode=mode), obj)
    result = cls_only_block(block, x, mask)
    assert result.shape == (3, 1, 32)
    torch.testing.assert_close(result, block(x, attn_mask=mask)[:, :1], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------- guided mean


def test_guided_mean_is_the_weighted_mean():
    generator = torch.Generator().manual_seed(0)
    patch_tokens = torch.randn(2, 5, 3, generator=generator)
    weights = torch.tensor([[1.0, 0.0, 3.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5, 2.0]])
    expected = torch.stack(
        [
            sum(w * t for w, t in zip(ws, ts, strict=True)) / ws.sum()
            for ws, ts in zip(weights, patch_tokens, strict=True)
        ]
    )
    torch.testing.assert_close(guided_mean(patch_tokens, weights), expected)
    # scale-free
    torch.testing.assert_close(guided_mean(patch_tokens, 10 * weights), expected)


def test_guided_mean_falls_back_to_the_plain_mean_for_zero_weights():
    patch_tokens = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    weights = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    result = guided_mean(patch_tokens, weights)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result[0], patch_tokens[0].mean(0))
    torch.testing.assert_close(result[1], patch_tokens[1, 1])
    torch.testing.assert_close(result[2], patch_tokens[2].mean(0))
    # the hard weights of an empty region are all zero: the CLS start is then the plain mean
    hard = patch_weights(torch.zeros(3, 4), HARD)
    torch.testing.assert_close(guided_mean(patch_tokens, hard), patch_tokens.mean(1))


BALANCED = GuidanceSettings(mode="balanced", context_share=0.25)


def square_defect(side, grid=14):
    """Coverage of a ``side`` x ``side`` patch defect in the middle of a ``grid`` x ``grid`` view."""
    anomaly = torch.zeros(1, grid, grid)
    start = (grid - side) // 2
    anomaly[0, start : start + side, start : start + side] = 1.0
    return anomaly.flatten(1)


def anomaly_share(weights, anomaly):
    return float((weights * (anomaly > 0)).sum() / weights.sum())


def test_balanced_anomaly_share_does_not_depend_on_the_defect_size():
    shares = {
        side: anomaly_share(patch_weights(square_defect(side), BALANCED), square_defect(side)) for side in (1, 2, 4, 8)
    }
    assert all(share == pytest.approx(0.75, abs=1e-5) for share in shares.values()), shares
    soft = {side: anomaly_share(patch_weights(square_defect(side), SOFT), square_defect(side)) for side in (1, 2, 4, 8)}
    assert soft[1] < 0.1 < 0.7 < soft[8]  # what it replaces: the share follows the defect's size


def test_balanced_context_never_outweighs_the_anomaly_and_background_counts_less():
    huge = square_defect(13)  # the context would need weight > 1 to reach its share
    weights = patch_weights(huge, BALANCED)
    assert weights.max() <= 1.0 and weights[huge == 0].max() == pytest.approx(1.0)
    anomaly = square_defect(2)
    on_object = torch.zeros_like(anomaly)
    on_object[0, :98] = 1.0  # the top half is object
    weights = patch_weights(anomaly, BALANCED, on_object)
    context = anomaly == 0
    assert weights[context & (on_object > 0)].min() > weights[context & (on_object == 0)].max()
    assert anomaly_share(weights, anomaly) == pytest.approx(0.75, abs=1e-5)


def test_balanced_empty_region_looks_at_the_whole_view_and_guided_mean_follows_the_weights():
    empty = torch.zeros(2, 196)
    torch.testing.assert_close(patch_weights(empty, BALANCED), torch.ones(2, 196))
    tokens = torch.zeros(1, 196, 2)
    anomaly = square_defect(1)
    tokens[0, anomaly[0] > 0, 0] = 1.0  # the defect's token is (1, 0), the rest (0, 1)
    tokens[0, anomaly[0] == 0, 1] = 1.0
    pooled = guided_mean(tokens, patch_weights(anomaly, BALANCED))
    torch.testing.assert_close(pooled, torch.tensor([[0.75, 0.25]]))  # the CLS start keeps the defect
    with pytest.raises(ValueError, match="context_share"):
        GuidanceSettings(mode="balanced", context_share=1.0)
