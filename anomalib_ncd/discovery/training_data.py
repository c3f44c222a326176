"""Training samples drawn from the view cache: two different cached views of each region per step.

Every random draw of training (which regions an epoch visits, in which order, and which two cached
views each region shows) is a function of ``(seed, epoch)`` alone, not of a global generator's
history. A run resumed from the checkpoint of epoch ``k`` therefore draws exactly what the
uninterrupted run drew from epoch ``k`` on, and ends bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from anomalib_ncd.discovery.view_cache import ViewCache


def seeded_generator(*key: int) -> torch.Generator:
    """A torch generator seeded by a tuple of integers (mixed by NumPy's ``SeedSequence``).

    Args:
        *key: e.g. ``(seed, epoch)`` or ``(seed, epoch, index)``.

    Returns:
        The generator.
    """
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class ViewPairDataset(Dataset):
    """Each item is a region with two distinct augmented views drawn from its cached pool.

    The pair of a region is drawn from ``(seed, epoch, index)`` (see the module docstring); the
    training loop sets :attr:`epoch` at the start of each epoch.

    Args:
        cache: the cached views (unlabeled regions first, then labeled ones, if any).
        labels: ``(R,)`` known-class labels, ``-1`` for unlabeled regions.
        seed: the run's seed.
    """

    def __init__(self, cache: ViewCache, labels: torch.Tensor, seed: int = 0) -> None:
        if labels.shape != (len(cache),):
            msg = f"labels must have shape ({len(cache)},), got {tuple(labels.shape)}"
            raise ValueError(msg)
        self.cache = cache
        self.labels = labels.long()
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = seeded_generator(self.seed, self.epoch, index)
        pair = torch.randperm(self.cache.n_views, generator=generator)[:2] + 1  # view 0 is the plain view
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


class EpochSampler(Sampler[int]):
    """Region order of an epoch, drawn from ``(seed, epoch)``: a shuffle, or weighted draws.

    Args:
        n_samples: regions in the dataset.
        weights: ``(R,)`` draw weights for sampling with replacement (labeled / unlabeled balance);
            ``None`` for a plain permutation.
        seed: the run's seed.

    Example:
        >>> sampler = EpochSampler(5, seed=0)
        >>> sampler.set_epoch(3); first = list(sampler); sampler.set_epoch(3)
        >>> first == list(sampler) and sorted(first) == [0, 1, 2, 3, 4]
        True
    """

    def __init__(self, n_samples: int, weights: torch.Tensor | None = None, seed: int = 0) -> None:
        self.n_samples = n_samples
        self.weights = None if weights is None else weights.double()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` gives (Lightning calls it every epoch).

        Args:
            epoch: the epoch number.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_samples

    def __iter__(self) -> Iterator[int]:
        generator = seeded_generator(self.seed, self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.n_samples, replacement=True, generator=generator)
        return iter(order.tolist())


def balanced_sampler(labels: torch.Tensor, seed: int = 0) -> EpochSampler:
    """The epoch sampler of a training set: labeled and unlabeled regions about 50/50 (AnomalyNCD).

    Args:
        labels: ``(R,)`` labels, ``-1`` for unlabeled.
        seed: the run's seed.

    Returns:
        Weighted draws with replacement when both kinds exist, a plain shuffle otherwise.
    """
    labeled = labels >= 0
    n_labeled, n_unlabeled = int(labeled.sum()), int((~labeled).sum())
    if n_labeled == 0 or n_unlabeled == 0:
        return EpochSampler(len(labels), seed=seed)
    weights = torch.where(labeled, 1.0 / n_labeled, 1.0 / n_unlabeled).double()
    return EpochSampler(len(labels), weights, seed=seed)
