"""A checkpoint callback whose writes are atomic, so a killed run always leaves a loadable checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint


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
