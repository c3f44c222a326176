"""Scoped torch intra-op thread counts for loops of small operations.

Augmenting one 224-px view or updating one coreset selection is a chain of tiny tensor operations.
Split over two threads, each of them waits for both, and on a machine whose cores are shared with
other jobs a descheduled thread stalls every one: measured here with a benchmark on the other core,
hue jitter took 500 ms per view on two threads and 5 ms on one. Such loops run on one thread;
large operations (the backbone's convolutions) keep torch's setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with at most ``n_threads`` torch intra-op threads, then restore the setting.

    Args:
        n_threads: thread cap (never raised above the current setting); ``None`` changes nothing.

    Yields:
        Nothing.

    Raises:
        ValueError: when ``n_threads`` is below 1.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if n_threads is not None and n_threads < 1:
        msg = f"n_threads must be at least 1 or None, got {n_threads}"
        raise ValueError(msg)
    before = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(min(n_threads, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)
