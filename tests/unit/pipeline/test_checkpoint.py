"""Atomic checkpoint writes through Lightning's public CheckpointIO hook."""

from pathlib import Path

import pytest
import torch
from anomalib.engine.plugins import AnomalibCheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO

from anomalib_ncd.pipeline.checkpoint import AtomicCheckpointIO


def test_a_write_lands_whole_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [target]


def test_a_write_killed_midway_keeps_the_last_complete_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "model.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)

    def dies_while_writing(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1


def test_it_is_anomalibs_io_so_the_engine_keeps_it_and_loads_safely():
    # anomalib's Engine refreshes the allow-list of an AnomalibCheckpointIO it is given, and adds
    # its own only when it has none; loading stays weights_only=True
    assert issubclass(AtomicCheckpointIO, AnomalibCheckpointIO)
