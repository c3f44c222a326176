"""The discovery network: a token backbone, prototype heads and a projection MLP.

**The anchor: a floor by construction.** Tokens of the frozen backbone averaged inside the
anomaly mask, clustered by k-means, are a strong training-free classifier of defects; a model
that clusters only its own CLS feature can end up below it (on small defects the CLS feature
drifts toward the surrounding surface). So the feature the heads cluster is

    x = (p - m) / |p - m| + W c,

``p`` the masked-pooled frozen descriptor of the view (the training-free baseline's,
:func:`~anomalib_ncd.discovery.novelty.anomaly_pooled`), ``m`` the mean of ``p`` over the training
regions (set once before training: the frozen features are non-negative, and without centring
their shared mean direction would make every cosine close to 1), ``c`` the backbone's trainable
CLS feature and ``W`` a linear map that starts at zero. Before training, ``x`` *is* the centred
baseline descriptor, so the heads start from the baseline's clusters; training can only add what
the learned feature brings. ``anchor=False`` (the default) gives the papers' model (``x = c``):
measured, the anchor helped on small synthetic defects (0.925 against 0.909 NMI) but training it
fell from its 0.90 start to 0.68 on NEU-DET, where the CLS feature alone reached 0.95.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_ncd.discovery.heads import ProjectionMLP, PrototypeHeads
from anomalib_ncd.discovery.novelty import anomaly_pooled

if TYPE_CHECKING:
    from anomalib_ncd.discovery.backbone import TokenBackbone


class DiscoveryNetwork(nn.Module):
    """Anomaly-guided backbone + ``n_heads`` prototype heads + a projector for contrastive losses.

    Args:
        backbone: a token backbone (:class:`~anomalib_ncd.discovery.backbone.CNNTokenBackbone` or
            :class:`~anomalib_ncd.discovery.backbone.ViTTokenBackbone`).
        n_classes: known + novel classes (the normal class is one of the novel ones).
        n_heads: independent prototype heads; the one with the lowest clustering loss is used.
        projection_dim: output of the projector (paper: 256).
        projection_hidden: hidden width of the projector (paper: 2048).
        anchor: cluster the anchored feature (module docstring) instead of the CLS feature alone.
    """

    anchor_mean: torch.Tensor  # a buffer, registered with the anchor only

    def __init__(
        self,
        backbone: TokenBackbone,
        n_classes: int,
        n_heads: int = 4,
        projection_dim: int = 256,
        projection_hidden: int = 2048,
        anchor: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.anchor = anchor
        self.out_dim = backbone.token_dim if anchor else backbone.out_dim
        if anchor:
            self.register_buffer("anchor_mean", torch.zeros(backbone.token_dim))
            self.residual = nn.Linear(backbone.out_dim, backbone.token_dim)
            nn.init.zeros_(self.residual.weight)
            nn.init.zeros_(self.residual.bias)
        self.heads = PrototypeHeads(self.out_dim, n_classes, n_heads)
        self.projector = ProjectionMLP(self.out_dim, projection_hidden, projection_dim)

    def embed(
        self, tokens: torch.Tensor, anomaly: torch.Tensor, object_prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CLS features from cached frozen tokens.

        Args:
            tokens: frozen tokens of a batch of views.
            anomaly: ``(B, N)`` anomaly coverage per patch.
            object_prior: ``(B, N)`` object coverage per patch, or ``None``.

        Returns:
            ``(B, D)`` features: the anchored feature, or the CLS feature without the anchor.
        """
        learned = self.backbone.tail(tokens, anomaly, object_prior)
        if not self.anchor:
            return learned
        pooled = anomaly_pooled(tokens, anomaly).to(learned.dtype) - self.anchor_mean.to(learned.dtype)
        return F.normalize(pooled, dim=-1) + self.residual(learned)

    @torch.no_grad()
    def set_anchor_mean(self, descriptors: torch.Tensor) -> None:
        """Centre the anchor on the training regions: ``m`` = mean masked-pooled descriptor.

        Args:
            descriptors: ``(R, C)`` the regions' masked-pooled frozen descriptors
                (:func:`~anomalib_ncd.discovery.novelty.anomaly_pooled` of their plain views).
        """
        if self.anchor:
            self.anchor_mean.copy_(descriptors.float().mean(dim=0).to(self.anchor_mean))

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
