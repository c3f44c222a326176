"""The discovery model tells a ViT from a CNN by timm's public registry functions."""

import pytest

from anomalib_ncd.discovery.lightning_model import _is_vit


@pytest.mark.parametrize(
    ("name", "vit"),
    [
        ("vit_base_patch8_224.dino", True),
        ("vit_small_patch16_224", True),
        ("mobilenetv2_100.tv_in1k", False),
        ("tf_efficientnet_lite0.in1k_offline", False),
        ("resnet18", False),
    ],
)
def test_vits_are_the_models_of_timms_vision_transformer_module(name, vit):
    assert _is_vit(name) is vit


def test_an_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        _is_vit("no_such_net")
