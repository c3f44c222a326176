"""The frozen part's output for every view of every region, computed once and reused every epoch.

Everything before the trainable tail is frozen, so for a given view (pixels and mask) its tokens
never change. Computing them once per view turns each training epoch into a pass over the small
tail only: on a CPU the difference between minutes and hours. View 0 of each region is the plain
evaluation view; views ``1..n_views`` are the augmented training views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from anomalib_ncd.discovery.guidance import guide_of, pool_to_patches
from anomalib_ncd.discovery.views import ViewMaker


@dataclass
class ViewCache:
    """Cached frozen tokens and patch guidance of every view of a set of regions.

    Attributes:
        tokens: ``(R, 1 + n_views, T, C)`` frozen tokens (half precision to halve memory).
        anomaly: ``(R, 1 + n_views, N)`` anomaly coverage of each patch.
        scores: ``(R,)`` region anomaly scores in ``[0, 1]``.
        areas: ``(R,)`` anomalous pixels of each region.
        image_index: ``(R,)`` image of each region.
        whole_image: ``(R,)`` True for the whole-image region of an image where nothing was found.
    """

    tokens: torch.Tensor
    anomaly: torch.Tensor
    scores: torch.Tensor
    areas: torch.Tensor
    image_index: torch.Tensor
    whole_image: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_views(self) -> int:
        """Augmented views per region (the plain view excluded)."""
        return self.tokens.shape[1] - 1


class RegionLike(Protocol):
    """What the cache needs of a region: crop, mask, score, area, image index, whole-image flag."""

    crop: np.ndarray
    mask: np.ndarray
    score: float
    area: int
    image_index: int
    whole_image: bool


def build_view_cache(
    regions: Sequence[RegionLike],
    backbone: nn.Module,
    view_maker: ViewMaker,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ViewCache:
    """Run the frozen part once on the plain view and every augmented view of each region.

    Args:
        regions: regions with their crop and mask loaded.
        backbone: a token backbone (``frozen(images, anomaly)``, ``grid``).
        view_maker: makes the views (its seed fixes them).
        batch_size: views per forward pass.
        device: where the frozen part runs.
        progress: called with the number of views done after each batch.

    Returns:
        The cache, on the CPU.
    """
    n_views = view_maker.settings.n_views
    jobs = [(r, v) for r in range(len(regions)) for v in range(1 + n_views)]
    tokens: torch.Tensor | None = None
    anomaly: torch.Tensor | None = None
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        images, masks = [], []
        for region_number, view_number in chunk:
            region = regions[region_number]
            if region.crop is None or region.mask is None:
                msg = f"region {region_number} has no crop loaded: extract regions with load_crops=True"
                raise ValueError(msg)
            guide = guide_of(region, backbone.guidance)
            if view_number == 0:
                image, mask = view_maker.plain(region.crop, guide)
            else:
                image, mask = view_maker.augmented(region.crop, guide, region_number, view_number)
            images.append(image)
            masks.append(mask)
        patches = pool_to_patches(torch.stack(masks), backbone.grid)
        # half precision on a GPU: the cache is stored in float16 anyway
        with torch.autocast(device_type=torch.device(device).type, enabled=torch.device(device).type == "cuda"):
            out = backbone.frozen(torch.stack(images).to(device), patches.to(device)).to("cpu", torch.float16)
        if tokens is None:
            tokens = torch.empty((len(regions), 1 + n_views, *out.shape[1:]), dtype=torch.float16)
            anomaly = torch.empty((len(regions), 1 + n_views, patches.shape[1]), dtype=torch.float32)
        for row, (region_number, view_number) in enumerate(chunk):
            tokens[region_number, view_number] = out[row]
            anomaly[region_number, view_number] = patches[row]
        if progress is not None:
            progress(len(chunk))
    if tokens is None or anomaly is None:
        msg = "no regions to cache"
        raise ValueError(msg)
    return ViewCache(
        tokens=tokens,
        anomaly=anomaly,
        scores=torch.tensor([float(r.score) for r in regions], dtype=torch.float32),
        areas=torch.tensor([float(r.area) for r in regions], dtype=torch.float32),
        image_index=torch.tensor([int(r.image_index) for r in regions], dtype=torch.long),
        whole_image=torch.tensor([bool(r.whole_image) for r in regions], dtype=torch.bool),
    )
