"""Fits are reproducible although anomalib 2.7's CLI parses ``--seed_everything`` and never seeds."""

from __future__ import annotations

import pytest
import torch

from anomalib_ncd.models import Prn
from anomalib_ncd.models.seeding import seed_fit, seeded_initialisation


def _prn(seed: int = 0) -> Prn:
    return Prn(backbone="mobilenetv2_100", pre_trained=False, input_size=64, seed=seed)


def test_prn_initialisation_ignores_the_callers_generator() -> None:
    torch.manual_seed(1)
    first = _prn().model.state_dict()
    torch.manual_seed(2)
    second = _prn().model.state_dict()
    trainable = [key for key in first if "feature_extractor" not in key]
    assert trainable
    assert all(torch.equal(first[key], second[key]) for key in trainable)
    other = _prn(seed=1).model.state_dict()
    assert not all(torch.equal(first[key], other[key]) for key in trainable)


def test_seeded_initialisation_leaves_the_callers_stream_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with seeded_initialisation(7):
        torch.rand(100)
    assert torch.equal(torch.rand(4), expected)


def test_a_fit_is_seeded_with_the_runs_seed_else_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    torch.manual_seed(11)
    assert seed_fit(5, "test") == 5  # nothing seeded the run: the model's seed
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")  # e.g. inherited from a seeded parent process
    torch.manual_seed(11)
    assert seed_fit(5, "test") == 8
    drawn = torch.rand(3)
    torch.manual_seed(8)
    assert torch.equal(drawn, torch.rand(3))
