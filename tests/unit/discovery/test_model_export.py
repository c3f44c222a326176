"""The model called on images (anomalib's export and TorchInferencer path): clear errors where it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_ncd.discovery.lightning_model import AnomalyNCD


def _model() -> AnomalyNCD:
    return AnomalyNCD(n_novel_classes=2, backbone="mobilenetv2_100", pretrained=False, views={"n_views": 2})


def test_calling_the_model_on_images_needs_a_detector() -> None:
    with pytest.raises(ValueError, match=r"AnomalyNCD\(detector=<checkpoint>\)"):
        _model()(torch.rand(1, 3, 32, 32))


def test_a_torch_export_needs_a_detector_to_put_in_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="detector"):
        _model().to_torch(tmp_path)
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("export", ["to_onnx", "to_openvino"])
def test_onnx_and_openvino_exports_are_refused_in_words(export: str, tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="torch only"):
        getattr(_model(), export)(tmp_path)
