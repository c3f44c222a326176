"""Token backbones: frozen/tail split, shapes, freezing, and exact equivalence to the plain timm ViT."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from anomalib_ncd.discovery.backbone import CNNTokenBackbone, ViTTokenBackbone
from anomalib_ncd.discovery.guidance import GuidanceSettings

VIT = "vit_tiny_patch16_224"
VIT_SIZE = 64  # a 4 x 4 patch grid


def images(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def spot(batch=2, n_patches=16):
    anomaly = torch.zeros(batch, n_patches)
    anomaly[:, 5], anomaly[:, 6], anomaly[:, 10] = 1.0, 0.6, 0.2
    return anomaly


# ------------------------------------------------------------------------------------------- CNN


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CNNTokenBackbone("mobilenetv2_100", dim=32, depth=2, num_heads=4, input_size=64, pretrained=False)


def test_cnn_shapes(cnn):
    channels = cnn.encoder.feature_info.channels()
    assert cnn.grid == (4, 4)  # stride 16 at 64 px
    assert cnn.token_dim == sum(channels)
    assert cnn.out_dim == 32
    frozen = cnn.frozen(images(3), spot(3))
    assert frozen.shape == (3, 16, cnn.token_dim)
    assert not frozen.requires_grad
    assert cnn.tail(frozen, spot(3)).shape == (3, 32)
    assert cnn.pos_embed.shape == (1, 17, 32)


def test_cnn_frozen_tokens_ignore_the_mask(cnn):
    x = images()
    torch.testing.assert_close(cnn.frozen(x, spot()), cnn.frozen(x, torch.zeros(2, 16)), rtol=0, atol=0)


def test_cnn_frozen_part_is_frozen_and_stays_in_eval_mode(cnn):
    cnn.train()
    try:
        assert cnn.training
        assert cnn.blocks.training
        assert not cnn.encoder.training
        batch_norms = [m for m in cnn.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert batch_norms
        assert not any(m.training for m in batch_norms)
        assert not any(p.requires_grad for p in cnn.encoder.parameters())
        tail = [p for name, p in cnn.named_parameters() if not name.startswith("encoder.")]
        assert tail
        assert all(p.requires_grad for p in tail)
        # training mode must not touch the BatchNorm running statistics of the frozen CNN
        before = {k: v.clone() for k, v in cnn.encoder.state_dict().items()}
        cnn.frozen(images(4, seed=3) * 3 + 1, spot(4))
        after = cnn.encoder.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        cnn.eval()


def test_cnn_gradient_reaches_the_tail_only(cnn):
    cnn.train()
    try:
        cnn.zero_grad(set_to_none=True)
        x = images()
        cnn.tail(cnn.frozen(x, spot()), spot()).square().sum().backward()
        assert all(p.grad is None for p in cnn.encoder.parameters())
        for name, parameter in cnn.named_parameters():
            if name.startswith("encoder."):
                continue
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
        assert cnn.cls_token.grad.abs().sum() > 0
        assert cnn.project[1].weight.grad.abs().sum() > 0
    finally:
        cnn.zero_grad(set_to_none=True)
        cnn.eval()


def test_cnn_untrained_cls_output_is_near_the_guided_mean_of_the_patches():
    """LayerScale starts the residual branches near zero: the CLS output is the anomaly-pooled feature."""
    torch.manual_seed(0)
    backbone = CNNTokenBackbone(
        "mobilenetv2_100", dim=32, depth=2, input_size=64, pretrained=False, layer_scale=1e-6
    ).eval()
    guidance = GuidanceSettings(mode="hard")
    backbone.guidance = guidance
    x, anomaly = images(), spot()
    with torch.no_grad():
        out = backbone.tail(backbone.frozen(x, anomaly), anomaly)
        patches = backbone.project(backbone.frozen(x, anomaly))
        start = patches[:, 5:7].mean(1) + backbone.pos_embed[0, 0]  # hard: patches 5 and 6 visible
        expected = backbone.norm(start)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("mode", ["none", "hard", "soft", "soft_rgf"])
def test_cnn_tail_runs_in_every_mode_and_empty_masks_stay_finite(cnn, mode):
    cnn.guidance = GuidanceSettings(mode=mode)
    try:
        anomaly = torch.cat([spot(1), torch.zeros(1, 16)])
        with torch.no_grad():
            out = cnn.tail(cnn.frozen(images(), anomaly), anomaly)
        assert out.shape == (2, 32)
        assert torch.isfinite(out).all()
    finally:
        cnn.guidance = GuidanceSettings()


def test_cnn_guidance_depends_on_the_mask(cnn):
    x = images()
    with torch.no_grad():
        tokens = cnn.frozen(x, spot())
        moved = spot().roll(4, dims=1)
        assert not torch.allclose(cnn.tail(tokens, spot()), cnn.tail(tokens, moved), atol=1e-5)


def test_missing_weights_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        CNNTokenBackbone("mobilenetv2_100", input_size=64, weights=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ViTTokenBackbone(VIT, input_size=VIT_SIZE, weights=str(tmp_path / "missing.pth"))


# ------------------------------------------------------------------------------------------- ViT


def make_vit(n_trainable_blocks=1, guidance=None, seed=0):
    torch.manual_seed(seed)
    return ViTTokenBackbone(
        VIT, n_trainable_blocks=n_trainable_blocks, guidance=guidance, pretrained=False, input_size=VIT_SIZE
    ).eval()


@pytest.fixture(scope="module")
def plain_vit():
    torch.manual_seed(0)  # the same random initialisation as make_vit(seed=0)
    return timm.create_model(VIT, pretrained=False, img_size=VIT_SIZE, num_classes=0).eval()


def test_vit_shapes_and_split():
    backbone = make_vit(n_trainable_blocks=2)
    assert backbone.grid == (4, 4)
    assert backbone.out_dim == backbone.token_dim == 192
    assert len(backbone.frozen_blocks) == 10
    assert len(backbone.blocks) == 2
    with torch.no_grad():
        tokens = backbone.frozen(images(), spot())
        assert tokens.shape == (2, 17, 192)
        assert backbone.tail(tokens, spot()).shape == (2, 192)


def test_vit_frozen_part_is_frozen_and_the_tail_trains():
    backbone = make_vit(n_trainable_blocks=2)
    backbone.train()
    assert not backbone.stem.training
    assert not backbone.frozen_blocks.training
    assert backbone.blocks.training
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable
    assert all(name.startswith(("blocks.", "norm.")) for name in trainable)
    assert not backbone.cls_token.requires_grad
    assert not backbone.pos_embed.requires_grad
    tokens = backbone.frozen(images(), spot())
    assert not tokens.requires_grad
    backbone.tail(tokens, spot()).sum().backward()
    assert all(p.grad is None for name, p in backbone.named_parameters() if name not in trainable)
    assert all(p.grad is not None for name, p in backbone.named_parameters() if name in trainable)


def test_vit_weights_are_those_of_the_plain_model(plain_vit):
    backbone = make_vit()
    torch.testing.assert_close(backbone.stem["patch_embed"].proj.weight, plain_vit.patch_embed.proj.weight)
    torch.testing.assert_close(backbone.blocks[-1].mlp.fc2.weight, plain_vit.blocks[-1].mlp.fc2.weight)
    torch.testing.assert_close(backbone.pos_embed, plain_vit.pos_embed)


@pytest.mark.parametrize("n_trainable_blocks", [1, 3])
@torch.no_grad()
def test_vit_without_guidance_is_the_plain_vit(plain_vit, n_trainable_blocks):
    backbone = make_vit(n_trainable_blocks, GuidanceSettings(mode="none"))
    x = images(3, VIT_SIZE)
    expected = plain_vit.forward_features(x)[:, 0]
    torch.testing.assert_close(plain_vit(x), expected)  # the pooled output is the CLS token after norm
    result = backbone.tail(backbone.frozen(x, spot(3)), spot(3))
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["hard", "soft", "soft_rgf"])
@torch.no_grad()
def test_vit_with_an_all_anomalous_mask_is_the_plain_vit(plain_vit, mode):
    backbone = make_vit(2, GuidanceSettings(mode=mode, n_layers=9))
    x, full = images(2, VIT_SIZE), torch.ones(2, 16)
    result = backbone.tail(backbone.frozen(x, full), full)
    torch.testing.assert_close(result, plain_vit.forward_features(x)[:, 0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_vit_with_no_guided_layer_is_the_plain_vit(plain_vit):
    backbone = make_vit(1, GuidanceSettings(mode="hard", n_layers=0))
    x = images(2, VIT_SIZE)
    result = backbone.tail(backbone.frozen(x, spot()), spot())
    torch.testing.assert_close(result, plain_vit.forward_features(x)[:, 0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_vit_guidance_is_independent_of_the_frozen_trainable_split(plain_vit):
    guidance = GuidanceSettings(mode="hard", n_layers=4)
    x = images(2, VIT_SIZE)
    outputs = []
    for n_trainable in (1, 3, 6):
        backbone = make_vit(n_trainable, guidance)
        outputs.append(backbone.tail(backbone.frozen(x, spot()), spot()))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs[2], outputs[0], rtol=0, atol=1e-5)
    # and the guidance does change the CLS output
    assert not torch.allclose(outputs[0], plain_vit.forward_features(x)[:, 0], atol=1e-3)


@torch.no_grad()
def test_vit_guided_frozen_blocks_change_only_the_cls_token_of_the_first_guided_block():
    depth = 12
    guidance = GuidanceSettings(mode="hard", n_layers=depth - 10)  # guided from block 10 on
    backbone = make_vit(1, guidance)  # 11 frozen blocks, the last one guided
    plain = make_vit(1, GuidanceSettings(mode="none"))
    x = images(2, VIT_SIZE)
    guided_tokens, plain_tokens = backbone.frozen(x, spot()), plain.frozen(x, spot())
    torch.testing.assert_close(guided_tokens[:, 1:], plain_tokens[:, 1:], rtol=0, atol=1e-5)
    assert not torch.allclose(guided_tokens[:, 0], plain_tokens[:, 0], atol=1e-4)


def test_vit_argument_errors():
    with pytest.raises(ValueError, match="n_trainable_blocks"):
        ViTTokenBackbone(VIT, n_trainable_blocks=0, pretrained=False, input_size=VIT_SIZE)
    with pytest.raises(ValueError, match="n_trainable_blocks"):
        ViTTokenBackbone(VIT, n_trainable_blocks=13, pretrained=False, input_size=VIT_SIZE)


def test_a_vit_without_a_single_cls_token_is_refused():
    # register tokens and average pooling: no single CLS token to guide
    with pytest.raises(ValueError, match="not a CLS-token ViT"):
        ViTTokenBackbone("vit_wee_patch16_reg1_gap_256", pretrained=False, input_size=32)


def test_vit_with_position_embeddings_for_patches_only_is_refused():
    # DeiT-3 embeds positions of the patches only: refused with a clear error instead of a shape error
    with pytest.raises(ValueError, match="embeds positions"):
        ViTTokenBackbone("deit3_small_patch16_224", pretrained=False, input_size=32)
