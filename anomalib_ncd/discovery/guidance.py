"""Anomaly-map-guided attention: where the CLS token may look.

Only the CLS-query row of the attention logits is changed; patch queries attend as usual
(AnomalyNCD's finding: masking every row or the patch rows did worse). The change is an additive
bias ``b_j`` on the logit of key ``j``, so the CLS token's attention becomes

    attn_cls(j) = w_j * exp(q_cls . k_j) / sum_i w_i * exp(q_cls . k_i),    b_j = log w_j,

i.e. each key's attention is multiplied by a weight ``w_j`` and renormalised. With ``a_j`` the
fraction of patch ``j`` inside the anomaly mask (relative to the region's most covered
patch, see :func:`relative_coverage`) and ``o_j`` its fraction inside the object mask
(the whole image when no object mask is given), the modes are:

- ``none``: ``w_j = 1`` (the plain ViT).
- ``hard`` (AnomalyNCD): ``w_j = 1`` if ``a_j >= 0.5`` else ``0`` (a ``-inf`` logit).
- ``soft`` (ProtoAnomalyNCD's additive bias): ``w_j = a_j + (1 - a_j) * rho``: an anomalous patch
  keeps its full weight and a normal one keeps ``rho`` of it, so context is damped, not cut.
- ``soft_rgf`` (soft bias with our Region Guidance Factor): the normal part is split by the object
  prior, ``w_j = a_j + (1 - a_j) * (o_j * rho_object + (1 - o_j) * rho_background)`` with
  ``rho_background < rho_object``: the CLS token looks at the anomaly, keeps some normal object
  context (what the product looks like around the defect) and all but ignores the background. The
  published formula is not public; this one is ours. Without an object mask ``o_j = 1`` and it
  equals ``soft`` with ``rho = rho_object``.
- ``balanced`` (ours, size-independent): the soft modes give a small defect a small share of the
  CLS attention (6 anomalous patches of 196 at weight 1 against 190 normal ones at 0.1: the defect
  gets 24%, the surface 76%). Here the context's weight is scaled per region so that, before the
  logits, the context holds a fixed share ``c`` of the total weight whatever the defect's size:
  with ``A = sum_j a_j`` and the context profile ``r_j = (1 - a_j) * (o_j + (1 - o_j) * beta)``
  (``beta = rho_background / rho_object``: background counts less than object), the weights are
  ``w_j = a_j + lambda * r_j`` with ``lambda = c / (1 - c) * A / sum_j r_j``, capped so that no
  context patch outweighs an anomalous one (``lambda * r_j <= 1``). The anomaly's share is then
  ``1 - c`` for a 2-patch scratch and for a 100-patch stain alike. A region without anomaly (an
  image where nothing was found) gets uniform weights: the CLS token looks at the whole view.

The CLS key itself always has ``w = 1``, so a region whose mask is empty (an image where nothing
was found) still has a defined attention: with ``hard`` the CLS token sees only itself, with the
soft modes every patch gets the same weight ``rho`` (the CLS key keeps 1), so the CLS token looks at
the whole image with its attention to itself raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F  # noqa: N812

if TYPE_CHECKING:
    import numpy as np

    from anomalib_ncd.discovery.view_cache import RegionLike

GUIDANCE_MODES = ("none", "hard", "soft", "soft_rgf", "balanced")


@dataclass(frozen=True)
class GuidanceSettings:
    """Settings of the anomaly-map-guided attention.

    Attributes:
        mode: one of ``none``, ``hard``, ``soft``, ``soft_rgf``, ``balanced`` (see the module
            docstring). Default ``balanced``: the only mode whose anomaly share of the CLS attention
            does not shrink with the defect's size, which a product that must keep defects of
            0.1% of an image needs by construction (measured in ``benchmarks/discovery_levers.py``).
        n_layers: guided blocks, counted from the last one (AnomalyNCD: 9 of 12). Blocks that
            belong to the frozen part are guided too, so the cached tokens already carry it.
        hard_threshold: patch fraction of anomaly needed to stay visible in ``hard`` mode.
        normal_weight: ``rho`` of ``soft``: weight of a normal patch relative to an anomalous one.
        object_weight: ``rho_object`` of ``soft_rgf``.
        background_weight: ``rho_background`` of ``soft_rgf``; with ``object_weight`` it also sets
            how much less background counts than object in ``balanced`` mode.
        context_share: ``c`` of ``balanced``: the context's share of the CLS attention weight.
        source: what ``a_j`` is measured on: ``mask`` (the region's binary MEBin mask) or ``map``
            (the detector's anomaly map inside the region, normalised by MEBin's range: a graded
            guide, as ProtoAnomalyNCD derives its bias from the anomaly map). ``hard`` always
            thresholds the binary mask.
    """

    mode: str = "balanced"
    n_layers: int = 9
    hard_threshold: float = 0.5
    normal_weight: float = 0.1
    object_weight: float = 0.1
    background_weight: float = 0.01
    source: str = "mask"
    context_share: float = 0.25

    def __post_init__(self) -> None:
        if self.source not in ("mask", "map"):
            msg = f"guidance source must be 'mask' or 'map', got {self.source!r}"
            raise ValueError(msg)
        if self.mode not in GUIDANCE_MODES:
            msg = f"guidance mode must be one of {GUIDANCE_MODES}, got {self.mode!r}"
            raise ValueError(msg)
        if not 0 < self.context_share < 1:
            msg = f"guidance context_share must be in (0, 1), got {self.context_share}"
            raise ValueError(msg)
        if self.n_layers < 0:
            msg = f"guidance n_layers must be >= 0, got {self.n_layers}"
            raise ValueError(msg)
        for name in ("normal_weight", "object_weight", "background_weight"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                msg = f"guidance {name} must be in (0, 1], got {value}"
                raise ValueError(msg)


def pool_to_patches(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each patch covered by a mask.

    Args:
        mask: ``(B, H, W)`` mask in ``[0, 1]``.
        grid: ``(h, w)`` patch grid.

    Returns:
        ``(B, h * w)`` coverage in row-major patch order (the ViT token order).
    """
    return F.adaptive_avg_pool2d(mask[:, None].float(), grid).flatten(1)


def relative_coverage(anomaly: torch.Tensor) -> torch.Tensor:
    """Patch coverage relative to the region's most covered patch.

    A region is cut around its defect, so its most covered patch is where the defect is, even when
    a thin crack covers only a tenth of it. Without this, a defect thinner than half a patch would
    vanish from the hard mask (no patch reaches 0.5) and barely register in the soft weights.

    Args:
        anomaly: ``(B, N)`` coverage in ``[0, 1]``.

    Returns:
        ``(B, N)`` coverage divided by each row's maximum (rows without anomaly stay 0).
    """
    peak = anomaly.amax(dim=1, keepdim=True)
    return torch.where(peak > 0, anomaly / peak.clamp_min(torch.finfo(anomaly.dtype).tiny), anomaly)


def patch_weights(
    anomaly: torch.Tensor,
    settings: GuidanceSettings,
    object_prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multiplicative attention weights ``w_j`` of the CLS query for each patch.

    Args:
        anomaly: ``(B, N)`` anomaly coverage of each patch.
        settings: guidance settings.
        object_prior: ``(B, N)`` object coverage of each patch; the whole image when ``None``.

    Returns:
        ``(B, N)`` weights in ``[0, 1]``.
    """
    if settings.mode == "none":
        return torch.ones_like(anomaly)
    anomaly = relative_coverage(anomaly)
    if settings.mode == "hard":
        return (anomaly >= settings.hard_threshold).to(anomaly.dtype)
    if settings.mode == "balanced":
        return balanced_weights(anomaly, settings, object_prior)
    if settings.mode == "soft":
        rest = torch.full_like(anomaly, settings.normal_weight)
    else:
        obj = torch.ones_like(anomaly) if object_prior is None else object_prior.to(anomaly.dtype)
        rest = obj * settings.object_weight + (1 - obj) * settings.background_weight
    return anomaly + (1 - anomaly) * rest


def balanced_weights(
    anomaly: torch.Tensor, settings: GuidanceSettings, object_prior: torch.Tensor | None = None
) -> torch.Tensor:
    """``balanced`` mode's weights: the context holds a fixed share of the weight (module docstring).

    Args:
        anomaly: ``(B, N)`` relative anomaly coverage (:func:`relative_coverage`).
        settings: guidance settings (``context_share``, and the object/background ratio).
        object_prior: ``(B, N)`` object coverage, or ``None`` (everything is object).

    Returns:
        ``(B, N)`` weights in ``[0, 1]``.

    Example:
        >>> small, large = torch.zeros(1, 100), torch.zeros(1, 100)
        >>> small[0, :2] = 1.0; large[0, :50] = 1.0
        >>> weights = [balanced_weights(small, GuidanceSettings()), balanced_weights(large, GuidanceSettings())]
        >>> [round(float(w[0, :k].sum() / w.sum()), 3) for w, k in zip(weights, (2, 50))]
        [0.75, 0.75]
    """
    obj = torch.ones_like(anomaly) if object_prior is None else object_prior.to(anomaly.dtype)
    beta = settings.background_weight / settings.object_weight
    profile = (1 - anomaly) * (obj + (1 - obj) * beta)
    tiny = torch.finfo(anomaly.dtype).tiny
    total_anomaly, total_profile = anomaly.sum(dim=1, keepdim=True), profile.sum(dim=1, keepdim=True)
    ratio = settings.context_share / (1 - settings.context_share)
    scale = ratio * total_anomaly / total_profile.clamp_min(tiny)
    # no context patch may outweigh an anomalous one
    scale = torch.minimum(scale, 1 / profile.amax(dim=1, keepdim=True).clamp_min(tiny))
    weights = anomaly + scale * profile
    return torch.where(total_anomaly > 0, weights, torch.ones_like(weights))


def cls_attention_mask(
    anomaly: torch.Tensor,
    settings: GuidanceSettings,
    object_prior: torch.Tensor | None = None,
    n_prefix: int = 1,
) -> torch.Tensor | None:
    """The additive attention mask that guides only the CLS-query row.

    Args:
        anomaly: ``(B, N)`` anomaly coverage of each patch.
        settings: guidance settings.
        object_prior: ``(B, N)`` object coverage, or ``None``.
        n_prefix: tokens before the patches (CLS first); they keep weight 1.

    Returns:
        ``(B, 1, n_prefix + N, n_prefix + N)`` float mask for ``scaled_dot_product_attention`` (zero
        except row 0), or ``None`` in ``none`` mode so the plain attention path runs.
    """
    if settings.mode == "none":
        return None
    return attention_mask_of_weights(patch_weights(anomaly, settings, object_prior), n_prefix)


def attention_mask_of_weights(weights: torch.Tensor, n_prefix: int = 1) -> torch.Tensor:
    """The CLS-row attention mask for given patch weights (see :func:`cls_attention_mask`).

    Args:
        weights: ``(B, N)`` multiplicative weights from :func:`patch_weights`.
        n_prefix: tokens before the patches (CLS first); they keep weight 1.

    Returns:
        ``(B, 1, n_prefix + N, n_prefix + N)`` float mask, zero except row 0.
    """
    batch, n_patches = weights.shape
    prefix = torch.ones(batch, n_prefix, dtype=weights.dtype, device=weights.device)
    # log(0) = -inf blocks a key; the CLS key (weight 1) keeps every row finite
    bias = torch.log(torch.cat([prefix, weights], dim=1))
    size = n_prefix + n_patches
    mask = torch.zeros(batch, 1, size, size, dtype=weights.dtype, device=weights.device)
    mask[:, 0, 0, :] = bias
    return mask


def guided_mean(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of patch tokens weighted by the guidance weights (plain mean where all weights are 0).

    Args:
        tokens: ``(B, N, C)`` patch tokens.
        weights: ``(B, N)`` non-negative weights.

    Returns:
        ``(B, C)`` pooled tokens.
    """
    total = weights.sum(dim=1, keepdim=True)
    uniform = torch.full_like(weights, 1.0 / weights.shape[1])
    normalised = torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), uniform)
    return torch.einsum("bn,bnc->bc", normalised, tokens)


def guide_of(region: RegionLike, settings: GuidanceSettings) -> np.ndarray | None:
    """The per-pixel guide of a region: its binary mask, or its anomaly-map crop for ``source='map'``.

    Args:
        region: a region with ``mask`` (and ``soft_mask`` when the map source is wanted).
        settings: guidance settings.

    Returns:
        ``(h, w)`` array (bool or float in ``[0, 1]``); ``None`` when the region's mask is not loaded.
    """
    soft = getattr(region, "soft_mask", None)
    if settings.source == "map" and settings.mode != "hard" and soft is not None:
        return soft
    return region.mask
