"""Finished runs as inputs of later commands: a completed run, and its discovery model read as data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_ncd.results import RunFolder, read_run_state, resolve_run

if TYPE_CHECKING:
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

RUN_COMMANDS = ("discover", "add", "review")  # runs that end with a discovery model


def completed_run(run: str | Path) -> tuple[Path, dict[str, Any]]:
    """A finished run that holds a discovery model (``discover``, ``add`` or ``review``), and its state.

    Args:
        run: the run folder or its ``latest`` link.

    Returns:
        ``(run folder, run.json's content)``.

    Raises:
        ValueError: when the run did not complete or is not one of those commands.
    """
    run_dir = resolve_run(run)
    state = read_run_state(run_dir)
    if state.get("command") not in RUN_COMMANDS or not state.get("complete"):
        msg = f"{run_dir} is not a completed discover, add or review run"
        raise ValueError(msg)
    return run_dir, state


def load_run_model(run_dir: Path) -> AnomalyNCD:
    """The discovery model of a run, read as data (:meth:`AnomalyNCD.load_from_checkpoint`).

    Args:
        run_dir: the run folder.

    Returns:
        The model.

    Raises:
        FileNotFoundError: when the run has no checkpoint.
        ValueError: when the checkpoint is corrupt, not an AnomalyNCD checkpoint, or needs types
            outside the allow-list.
    """
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

    path = RunFolder(run_dir).checkpoint
    if not path.is_file():
        msg = f"{run_dir} has no model checkpoint ({RunFolder.CHECKPOINT})"
        raise FileNotFoundError(msg)
    return AnomalyNCD.load_from_checkpoint(str(path), map_location="cpu")
