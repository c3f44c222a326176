"""Training samples drawn from the view cache: two different cached views of each region per step."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from anomalib_ncd.discovery.view_cache import ViewCache


class ViewPairDataset(Dataset):
    """Each item is a region with two distinct augmented views drawn from its cached pool.

    The views are drawn with torch's global generator, so a seeded run (``seed_everything``) with
    ``num_workers=0`` is reproducible.

    Args:
        cache: the cached views (unlabeled regions first, then labeled ones, if any).
        labels: ``(R,)`` known-class labels, ``-1`` for unlabeled regions.
    """

    def __init__(self, cache: ViewCache, labels: torch.Tensor) -> None:
        if labels.shape != (len(cache),):
            msg = f"labels must have shape ({len(cache)},), got {tuple(labels.shape)}"
            raise ValueError(msg)
        self.cache = cache
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = torch.randperm(self.cache.n_views)[:2] + 1  # view 0 is the plain evaluation view
        item = {
            "tokens": self.cache.tokens[index, pair],
            "anomaly": self.cache.anomaly[index, pair],
            "label": self.labels[index],
            "score": self.cache.scores[index],
            "index": torch.tensor(index),
        }
        if self.cache.objects is not None:
            item["object"] = self.cache.objects[index, pair]
        return item


def balanced_sampler(labels: torch.Tensor) -> Sampler[int] | None:
    """A sampler drawing labeled and unlabeled regions about 50/50 (AnomalyNCD), or ``None``.

    Args:
        labels: ``(R,)`` labels, ``-1`` for unlabeled.

    Returns:
        A weighted sampler of ``R`` draws with replacement, or ``None`` when only one kind exists
        (plain shuffling is then the right thing).
    """
    labeled = labels >= 0
    n_labeled, n_unlabeled = int(labeled.sum()), int((~labeled).sum())
    if n_labeled == 0 or n_unlabeled == 0:
        return None
    weights = torch.where(labeled, 1.0 / n_labeled, 1.0 / n_unlabeled).double()
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
