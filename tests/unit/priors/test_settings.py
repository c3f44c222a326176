from pathlib import Path

import pytest

from anomalib_ncd.priors import ObjectPriorSettings
from anomalib_ncd.priors.settings import PRIOR_KINDS


def test_defaults_are_no_prior():
    settings = ObjectPriorSettings()
    assert settings.kind == "none"
    assert settings.sam_model_type == "vit_h"
    assert settings.device == "auto"
    assert (settings.box_threshold, settings.text_threshold, settings.min_inside) == (0.3, 0.25, 0.5)


@pytest.mark.parametrize("kind", PRIOR_KINDS)
def test_every_kind_is_accepted(kind):
    assert ObjectPriorSettings(kind=kind).kind == kind


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "sam"}, "kind must be one of"),
        ({"sam_model_type": "vit_x"}, "sam_model_type"),
        ({"box_threshold": -0.1}, "box_threshold"),
        ({"text_threshold": 1.5}, "text_threshold"),
        ({"min_inside": 2}, "min_inside"),
        ({"box_threshold": True}, "box_threshold"),
        ({"box_threshold": "0.3"}, "box_threshold"),
        ({"device": "gpu"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"prompt": "  "}, "prompt"),
        ({"sam_checkpoint": ""}, "sam_checkpoint"),
        ({"cache_dir": 3}, "cache_dir"),
        ({"drop_outside": "yes"}, "drop_outside"),
        ({"drop_outside": True}, "drop_outside needs an object prior"),
    ],
)
def test_invalid_settings_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        ObjectPriorSettings(**changes)


def test_valid_devices_and_paths(tmp_path):
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert ObjectPriorSettings(device=device).device == device
    settings = ObjectPriorSettings(kind="grounded_sam", sam_checkpoint=tmp_path / "sam.pth", min_inside=1)
    assert settings.sam_checkpoint == str(tmp_path / "sam.pth")
    assert isinstance(settings.min_inside, float)
    assert ObjectPriorSettings(kind="foreground", drop_outside=True, min_inside=0.8).drop_outside


def test_with_prompt_fills_the_category_only_when_unset():
    settings = ObjectPriorSettings(kind="grounded_sam")
    assert settings.with_prompt("metal_nut").prompt == "metal nut"
    assert settings.with_prompt(None) is settings
    assert ObjectPriorSettings(kind="grounded_sam", prompt="bottle cap").with_prompt("bottle").prompt == "bottle cap"


def test_settings_are_frozen():
    settings = ObjectPriorSettings()
    with pytest.raises(AttributeError):
        settings.kind = "foreground"  # type: ignore[misc]
    assert Path(ObjectPriorSettings(cache_dir="~/x").cache_dir).is_absolute()
