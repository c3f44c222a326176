"""``AnomalyNCD()`` is the model ``anomalib-ncd discover`` builds: the same defaults, and it works offline."""

from __future__ import annotations

import inspect

import pytest

from anomalib_ncd.commands.discover import discover
from anomalib_ncd.discovery.lightning_model import AnomalyNCD

SHARED = ["backbone", "weights", "working_long_side", "nothing_found", "anchor", "fusion_temperature", "seed"]
SETTINGS = ["guidance", "views", "training", "novelty", "crops", "object_prior"]


def _default(function: object, name: str) -> object:
    return inspect.signature(function).parameters[name].default


@pytest.mark.parametrize("name", SHARED)
def test_plain_defaults_match_the_cli(name: str) -> None:
    assert _default(AnomalyNCD, name) == _default(discover, name)


@pytest.mark.parametrize("name", SETTINGS)
def test_settings_default_to_the_clis(name: str) -> None:
    model = AnomalyNCD(pretrained=False)
    attribute = {"guidance": "guidance_settings", "views": "view_settings", "training": "training_settings"}
    attribute |= {"novelty": "novelty_settings", "crops": "crop_settings", "object_prior": "object_prior_settings"}
    assert getattr(model, attribute[name]) == _default(discover, name)


def test_the_default_model_loads_its_weights_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AnomalyNCD()  # the packaged ImageNet weights, no hub
    assert model.hparams["backbone"] == "mobilenetv2_100.tv_in1k"
