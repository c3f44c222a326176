"""Seeding for fits that nobody seeded: anomalib 2.7's CLI reads ``--seed_everything`` but never seeds.

``anomalib train ... --seed_everything 0`` parses the option and then instantiates the model and
runs the fit on whatever state the global generators happen to be in, so two identical commands
train two different models. A fit already seeded (``lightning.seed_everything`` sets
``PL_GLOBAL_SEED``, as ``anomalib-ncd`` and anomalib's pipelines do) is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

logger = logging.getLogger("anomalib_ncd")


def run_is_seeded() -> bool:
    """Whether ``lightning.seed_everything`` has seeded this process."""
    return "PL_GLOBAL_SEED" in os.environ


def seed_unseeded_fit(seed: int, model_name: str) -> None:
    """Seed the global generators with ``seed`` unless the run is seeded already.

    Args:
        seed: the model's seed.
        model_name: named in the log line.
    """
    if run_is_seeded():
        return
    from lightning.pytorch import seed_everything

    logger.info("%s: unseeded fit (anomalib's CLI ignores --seed_everything), seeded with %d", model_name, seed)
    seed_everything(seed, workers=True, verbose=False)


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
