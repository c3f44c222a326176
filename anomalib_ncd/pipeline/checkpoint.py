"""A checkpoint callback whose writes are atomic, so a killed run always leaves a loadable checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint
from lightning.pytorch import LightningModule


class AtomicModelCheckpoint(ModelCheckpoint):
    """anomalib's ``ModelCheckpoint`` writing to a temporary file and renaming it into place.

    Without a monitored metric it overwrites ``<dirpath>/<filename>.ckpt`` after every epoch, so
    an interrupted fit resumes from its last completed epoch (``Engine.fit(ckpt_path=...)``).
    """

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        temporary = f"{filepath}.partial"
        super()._save_checkpoint(trainer, temporary)
        if trainer.is_global_zero:
            Path(temporary).replace(filepath)
        self._last_checkpoint_saved = filepath


def save_model_checkpoint(model: LightningModule, path: str | Path) -> Path:
    """Write a model's Lightning checkpoint without a trainer (e.g. after a continual update), atomically.

    The file holds what ``Trainer.save_checkpoint`` puts there for loading: the state dict, the
    hyper-parameters and the model's own ``on_save_checkpoint`` additions, so
    ``type(model).load_from_checkpoint(path)`` rebuilds it.

    Args:
        model: the model.
        path: the checkpoint file.

    Returns:
        The path.
    """
    import lightning
    import torch

    from anomalib_ncd.io import atomic_write_path

    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    model.on_save_checkpoint(checkpoint)
    path = Path(path)
    with atomic_write_path(path) as temporary:
        torch.save(checkpoint, temporary)
    return path
