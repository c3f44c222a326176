"""PyTorch modules of PRN (Zhang et al., Prototypical Residual Networks, CVPR 2023).

A frozen ImageNet CNN gives feature maps at three scales. Each scale has prototype feature maps
(k-means centres of the normal training images' maps); the residual of a feature vector is its
squared difference to the same position of the nearest prototype. Features and residuals are fused
across scales (:class:`MultiScaleFusion`), each scale goes through a multi-size self-attention
(:class:`MultiSizeAttention`: tokens are square patches of several sizes), and a U-Net-like decoder
(:class:`ResidualDecoder`) turns the three scales into a one-channel anomaly map.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import InferenceBatch
from anomalib.models.components import TimmFeatureExtractor
from torch import nn
from torch.nn import functional as F  # noqa: N812

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def nearest_prototype_residual(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Squared difference of each feature vector to the same position of its nearest prototype map.

    Args:
        features: ``(B, C, H, W)`` feature maps.
        prototypes: ``(K, C, H, W)`` prototype maps of the same scale.

    Returns:
        ``(B, C, H, W)`` residuals ``(f - p_k*)^2`` with ``k*`` the prototype nearest at that position.
    """
    # ||f - p||^2 per (b, k, h, w) without materialising (B, K, C, H, W)
    distances = (
        features.pow(2).sum(1, keepdim=True)
        - 2 * torch.einsum("bchw,kchw->bkhw", features, prototypes)
        + prototypes.pow(2).sum(1)[None]
    )
    nearest = distances.argmin(1)  # (B, H, W)
    chosen = prototypes.permute(0, 2, 3, 1)  # (K, H, W, C)
    rows = torch.arange(features.shape[2], device=features.device)[None, :, None]
    cols = torch.arange(features.shape[3], device=features.device)[None, None, :]
    picked = chosen[nearest, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    return (features - picked).pow(2)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MultiScaleFusion(nn.Module):
    """Each scale sees every scale: all inputs resized to its size, concatenated and convolved.

    Args:
        in_channels: channels of each scale's input (feature + residual).
        out_channels: channels of each scale's output.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        total = sum(in_channels)
        self.blocks = nn.ModuleList(_conv_block(total, out) for out in out_channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fuse the scales.

        Args:
            inputs: one ``(B, C_s, H_s, W_s)`` map per scale.

        Returns:
            One fused map per scale, at that scale's size.
        """
        outputs = []
        for block, target in zip(self.blocks, inputs, strict=True):
            size = target.shape[-2:]
            resized = [x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear") for x in inputs]
            outputs.append(block(torch.cat(resized, dim=1)))
        return outputs


def patch_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """One token per non-overlapping ``patch x patch`` square: the square's mean feature.

    Args:
        x: ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``patch``.
        patch: side of a square.

    Returns:
        ``(B, (H / patch) * (W / patch), C)`` tokens in row-major square order.
    """
    return F.avg_pool2d(x, patch).flatten(2).transpose(1, 2)


def spread_tokens(tokens: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Put each token back on every pixel of its square (the inverse layout of :func:`patch_tokens`).

    Args:
        tokens: ``(B, N, C)``.
        patch: side of a square.
        height: ``H`` of the map.
        width: ``W`` of the map.

    Returns:
        ``(B, C, H, W)``.
    """
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height // patch, width // patch)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


class MultiSizeAttention(nn.Module):
    """Self-attention among square patches of several sizes, averaged, with a residual connection.

    For a map of side ``S``, patch side ``S / d`` for each divisor ``d`` (PRN: ``S, S/2, S/4, S/8``):
    the map is cut into ``d x d`` patches, each patch becomes one token (its mean feature, projected),
    the tokens attend to each other, and each result is added back on its patch's pixels. Small
    patches relate local regions across the image; the whole-map patch adds global context. (A token
    is the patch's mean rather than its flattened pixels, which would need a ``C * S * S``-wide
    projection for the largest patch.)

    Args:
        channels: channels of the map.
        size: side of the (square) map.
        divisors: ``d`` of each patch side ``size / d``; each must divide ``size``.
        token_dim: width of the attention tokens.
        num_heads: attention heads.
    """

    def __init__(
        self, channels: int, size: int, divisors: Sequence[int] = (1, 2, 4, 8), token_dim: int = 64, num_heads: int = 4
    ) -> None:
        super().__init__()
        bad = [d for d in divisors if d < 1 or size % d]
        if bad:
            msg = f"patch divisors {bad} do not divide the map side {size}"
            raise ValueError(msg)
        self.patches = [size // d for d in divisors]
        self.embed = nn.ModuleList(nn.Linear(channels, token_dim) for _ in self.patches)
        self.position = nn.ParameterList(nn.Parameter(torch.zeros(1, d * d, token_dim)) for d in divisors)
        self.attend = nn.ModuleList(nn.MultiheadAttention(token_dim, num_heads, batch_first=True) for _ in self.patches)
        self.unembed = nn.ModuleList(nn.Linear(token_dim, channels) for _ in self.patches)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, C, S, S)``.

        Returns:
            ``(B, C, S, S)``.
        """
        height, width = x.shape[-2:]
        outputs = []
        for patch, embed, position, attend, unembed in zip(
            self.patches, self.embed, self.position, self.attend, self.unembed, strict=True
        ):
            tokens = embed(patch_tokens(x, patch)) + position
            mixed, _ = attend(tokens, tokens, tokens, need_weights=False)
            outputs.append(spread_tokens(unembed(mixed), patch, height, width))
        return x + self.norm(torch.stack(outputs).mean(0))


class ResidualDecoder(nn.Module):
    """U-Net-like decoder: from the coarsest scale up, each step upsamples and merges the next scale.

    Args:
        channels: channels of the scales, finest first.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        reversed_channels = list(channels)[::-1]
        self.merge = nn.ModuleList(
            _conv_block(coarse + fine, fine) for coarse, fine in itertools.pairwise(reversed_channels)
        )
        finest = channels[0]
        self.head = nn.Sequential(_conv_block(finest, finest), nn.Conv2d(finest, 1, 1))

    def forward(self, scales: Sequence[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        """Decode.

        Args:
            scales: maps finest first.
            output_size: ``(H, W)`` of the logits.

        Returns:
            ``(B, 1, H, W)`` logits.
        """
        x = scales[-1]
        for merge, skip in zip(self.merge, list(scales)[-2::-1], strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear")
            x = merge(torch.cat([x, skip], dim=1))
        return F.interpolate(self.head(x), size=output_size, mode="bilinear")


class PrnModel(nn.Module):
    """PRN: frozen features, prototype residuals, multi-scale fusion, multi-size attention, decoder.

    Args:
        backbone: timm backbone name.
        layers: three feature layers, finest first.
        pre_trained: load ImageNet weights.
        input_size: side of the (square) input; the attention sizes are fractions of each scale.
        fusion_channels: channels of each scale after fusion.
        attention_divisors: patch sizes of the multi-size attention as divisors of the map side.
        top_k: pixels averaged into the image score (PRN: 100).
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        pre_trained: bool = True,
        input_size: int = 256,
        fusion_channels: Sequence[int] = (64, 96, 128),
        attention_divisors: Sequence[int] = (1, 2, 4, 8),
        top_k: int = 100,
    ) -> None:
        super().__init__()
        self.feature_extractor = TimmFeatureExtractor(backbone, layers=list(layers), pre_trained=pre_trained).eval()
        self.layers = list(layers)
        self.top_k = top_k
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        with torch.no_grad():
            shapes = [f.shape[1:] for f in self.extract(torch.zeros(1, 3, input_size, input_size))]
        self.feature_shapes = [tuple(s) for s in shapes]
        for index, (channels, height, width) in enumerate(self.feature_shapes):
            self.register_buffer(f"prototypes_{index}", torch.zeros(0, channels, height, width))
        in_channels = [2 * shape[0] for shape in self.feature_shapes]
        self.fusion = MultiScaleFusion(in_channels, fusion_channels)
        self.attention = nn.ModuleList(
            MultiSizeAttention(channels, shape[1], [d for d in attention_divisors if shape[1] % d == 0])
            for channels, shape in zip(fusion_channels, self.feature_shapes, strict=True)
        )
        self.decoder = ResidualDecoder(fusion_channels)

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen feature maps of images in ``[0, 1]`` (normalised here), finest first.

        Args:
            images: ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            One ``(B, C_s, H_s, W_s)`` map per layer.
        """
        self.feature_extractor.eval()
        features = self.feature_extractor((images - self.mean) / self.std)
        return [features[layer] for layer in self.layers]

    @property
    def prototypes(self) -> list[torch.Tensor]:
        """The prototype maps of each scale (empty until :meth:`set_prototypes`)."""
        return [getattr(self, f"prototypes_{index}") for index in range(len(self.layers))]

    def set_prototypes(self, prototypes: Sequence[torch.Tensor]) -> None:
        """Store the prototype maps (one ``(K, C, H, W)`` tensor per scale).

        Args:
            prototypes: the maps, finest scale first.
        """
        for index, (maps, shape) in enumerate(zip(prototypes, self.feature_shapes, strict=True)):
            if tuple(maps.shape[1:]) != shape:
                msg = f"prototypes of scale {index} have shape {tuple(maps.shape[1:])}, expected {shape}"
                raise ValueError(msg)
            setattr(self, f"prototypes_{index}", maps.detach().to(self.mean.device, torch.float32).clone())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # the prototype count is known only after fitting: take the checkpoint's shape
        for index in range(len(self.layers)):
            saved = state_dict.get(f"{prefix}prototypes_{index}")
            if saved is not None:
                setattr(self, f"prototypes_{index}", torch.empty_like(saved, device=self.mean.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly logits at the input size.

        Args:
            images: ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            ``(B, 1, H, W)`` logits.
        """
        if any(p.shape[0] == 0 for p in self.prototypes):
            msg = "PRN has no prototypes yet: they are computed from the normal training images at fit start"
            raise RuntimeError(msg)
        features = self.extract(images)
        residuals = [nearest_prototype_residual(f, p) for f, p in zip(features, self.prototypes, strict=True)]
        fused = self.fusion([torch.cat([f, r], dim=1) for f, r in zip(features, residuals, strict=True)])
        attended = [attention(x) for attention, x in zip(self.attention, fused, strict=True)]
        return self.decoder(attended, tuple(images.shape[-2:]))

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Mean of the ``top_k`` highest pixel scores of each map.

        Args:
            anomaly_map: ``(B, 1, H, W)`` or ``(B, H, W)``.

        Returns:
            ``(B,)`` scores.
        """
        flat = anomaly_map.flatten(1)
        return flat.topk(min(self.top_k, flat.shape[1]), dim=1).values.mean(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Logits in training mode; the anomaly map and score in evaluation mode.

        Args:
            images: ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            Logits ``(B, 1, H, W)`` when training, else an ``InferenceBatch``.
        """
        logits = self.logits(images)
        if self.training:
            return logits
        anomaly_map = torch.sigmoid(logits)
        return InferenceBatch(pred_score=self.image_score(anomaly_map), anomaly_map=anomaly_map)
