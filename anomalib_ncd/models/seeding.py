"""Seeding at the start of a fit: anomalib 2.7's CLI reads ``--seed_everything`` but never seeds.

``anomalib train ... --seed_everything 0`` parses the option and then builds the model and runs the
fit on whatever state the global generators happen to be in, so two identical commands trained two
different models. The models of this package therefore seed their own fit when it starts: with the
run's seed where ``lightning.seed_everything`` set one (``PL_GLOBAL_SEED``, as Lightning re-seeds
each process of a distributed run), else with the model's own ``seed``.

An inherited ``PL_GLOBAL_SEED`` (a child process of a seeded one) is not proof that this process
was seeded, which is why the fit is re-seeded rather than trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

logger = logging.getLogger("anomalib_ncd")


def seed_fit(seed: int, model_name: str) -> int:
    """Seed the global generators as a fit starts: the run's seed if one was set, else ``seed``.

    Args:
        seed: the model's seed, used when no run seed is set.
        model_name: named in the log line.

    Returns:
        The seed used.
    """
    from lightning.pytorch import seed_everything

    run_seed = os.environ.get("PL_GLOBAL_SEED")
    chosen = seed if run_seed is None else int(run_seed)
    workers = os.environ.get("PL_SEED_WORKERS", "1") == "1"
    logger.debug("%s: fit seeded with %d", model_name, chosen)
    seed_everything(chosen, workers=workers, verbose=False)
    return chosen


@contextlib.contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Initialise modules from ``seed`` without touching the caller's torch generator.

    Args:
        seed: the seed of the initialisation.

    Yields:
        Nothing; modules built inside draw their weights from ``seed``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
