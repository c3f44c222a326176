"""The discovery network: a token backbone, prototype heads and a projection MLP."""

from __future__ import annotations

import torch
from torch import nn

from anomalib_ncd.discovery.heads import ProjectionMLP, PrototypeHeads


class DiscoveryNetwork(nn.Module):
    """Anomaly-guided backbone + ``n_heads`` prototype heads + a projector for contrastive losses.

    Args:
        backbone: a token backbone (:class:`~anomalib_ncd.discovery.backbone.CNNTokenBackbone` or
            :class:`~anomalib_ncd.discovery.backbone.ViTTokenBackbone`).
        n_classes: known + novel classes (the normal class is one of the novel ones).
        n_heads: independent prototype heads; the one with the lowest clustering loss is used.
        projection_dim: output of the projector (paper: 256).
        projection_hidden: hidden width of the projector (paper: 2048).
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        n_heads: int = 4,
        projection_dim: int = 256,
        projection_hidden: int = 2048,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = PrototypeHeads(backbone.out_dim, n_classes, n_heads)
        self.projector = ProjectionMLP(backbone.out_dim, projection_hidden, projection_dim)

    def embed(
        self, tokens: torch.Tensor, anomaly: torch.Tensor, object_prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CLS features from cached frozen tokens.

        Args:
            tokens: frozen tokens of a batch of views.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, D)`` CLS features.
        """
        return self.backbone.tail(tokens, anomaly, object_prior)

    def forward(
        self,
        tokens: torch.Tensor,
        anomaly: torch.Tensor,
        object_prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, per-head cosine logits and projections from cached frozen tokens.

        Args:
            tokens: frozen tokens of a batch of views.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(features (B, D), logits (H, B, K), projections (B, P))``.
        """
        features = self.embed(tokens, anomaly, object_prior)
        return features, self.heads(features), self.projector(features)
