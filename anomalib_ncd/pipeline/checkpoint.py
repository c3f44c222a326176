"""Atomic checkpoint writes, so a killed run always leaves a loadable checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.engine.plugins import AnomalibCheckpointIO
from lightning.pytorch import LightningModule


class AtomicCheckpointIO(AnomalibCheckpointIO):
    """anomalib's checkpoint IO (loads with ``weights_only=True`` and its allow-list), writing atomically.

    Lightning's ``save_checkpoint`` is the public hook of every checkpoint write: the file is written
    beside its target and renamed into place, so the target is always the last complete checkpoint.
    anomalib's ``Engine`` keeps a plugin of this type and refreshes its allow-list from the model.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``<path>.partial``, then rename it to ``path``.

        Args:
            checkpoint: the checkpoint content.
            path: the target file.
            storage_options: passed on to Lightning.
        """
        temporary = f"{path}.partial"
        super().save_checkpoint(checkpoint, temporary, storage_options)
        Path(temporary).replace(path)


def epoch_checkpoint(dirpath: str | Path) -> ModelCheckpoint:
    """The ``ModelCheckpoint`` of anomalib, overwriting ``<dirpath>/model.ckpt`` after every epoch.

    With :class:`AtomicCheckpointIO` in the trainer's plugins, an interrupted fit resumes from its
    last completed epoch (``Engine.fit(ckpt_path=...)``).

    Args:
        dirpath: the checkpoint folder.

    Returns:
        The callback.
    """
    return ModelCheckpoint(dirpath=dirpath, filename="model", auto_insert_metric_name=False)


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
