"""`read_checkpoint`: files are read as data whatever their format, and each bad kind is named in words."""

import pickle

import pytest
import torch

from anomalib_ncd.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
    require_lightning_checkpoint,
    safe_loading,
)


class Plant:
    """Unpickled, it creates a file: what a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("legacy", [False, True])
def test_planted_code_is_refused_in_either_torch_format(tmp_path, legacy):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Plant(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match="needs io.open to load.*could run code.*trust it") as info:
        read_checkpoint(path, advice="trust it")
    assert info.value.types == ["io.open"]
    assert not marker.exists()


def test_a_bare_pickle_is_refused_as_no_torch_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "raw.ckpt"
    path.write_bytes(pickle.dumps({"x": Plant(marker)}))
    with pytest.raises(CheckpointError, match="not in the format torch.save writes"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "ends early"), (b"\x00garbage", "not in the format torch.save writes")],
)
def test_unreadable_files_say_so(tmp_path, content, expected):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(path, what="run checkpoint")
    with pytest.raises(FileNotFoundError, match="run checkpoint not found"):
        read_checkpoint(tmp_path / "absent.ckpt", what="run checkpoint")


def test_a_truncated_checkpoint_is_named_corrupt(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"cut.ckpt is not a readable PyTorch checkpoint \(corrupt or truncated"):
        read_checkpoint(path)


def test_trusted_files_load_in_full_only_on_request(tmp_path):
    import fractions

    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "ratio": fractions.Fraction(1, 3)}, path)
    with pytest.raises(UnsafeCheckpointError, match="fractions.Fraction"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust=True)["ratio"] == fractions.Fraction(1, 3)


def test_the_allow_list_is_scoped(tmp_path):
    from anomalib import PrecisionType

    path = tmp_path / "enum.ckpt"
    torch.save({"precision": PrecisionType.FLOAT32}, path)
    assert read_checkpoint(path)["precision"] is PrecisionType.FLOAT32  # anomalib's allow-list
    with safe_loading():
        torch.load(path, weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # outside the block, torch's defaults again


def test_lightning_checkpoints_are_told_apart_from_other_torch_files(tmp_path):
    good = {"state_dict": {}, "pytorch-lightning_version": "2.6.6"}
    assert require_lightning_checkpoint(good, tmp_path / "a.ckpt", "a model") is good
    with pytest.raises(CheckpointError, match=r"has 'state_dict' and 'pytorch-lightning_version', this file holds 'a'"):
        require_lightning_checkpoint({"a": 1}, tmp_path / "a.ckpt", "a model")
    with pytest.raises(CheckpointError, match="it holds a list"):
        require_lightning_checkpoint([1], tmp_path / "a.ckpt", "a model")
