"""Helpers the benchmark scripts share (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import time

import lightning.pytorch as pl


def fit_prepared(model: pl.LightningModule, epochs: int) -> float:
    """Train a prepared discovery model with a quiet Lightning trainer (no logger, no checkpoints).

    Args:
        model: an :class:`~anomalib_ncd.AnomalyNCD` whose views are prepared.
        epochs: training epochs.

    Returns:
        The training time in seconds.
    """
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model)
    return time.perf_counter() - start
