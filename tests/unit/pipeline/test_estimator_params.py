"""The discovery training's Lightning strategy: distributed training starts at the fit, once."""

from __future__ import annotations

import pytest

from anomalib_ncd.pipeline.estimator import DefectDiscovery, training_strategy


@pytest.mark.parametrize(
    ("strategy", "devices", "num_nodes", "expected"),
    [
        ("auto", 1, 1, "auto"),
        ("auto", "auto", 1, "auto"),
        ("auto", 2, 1, "ddp_spawn"),
        ("auto", "2", 1, "ddp_spawn"),
        ("auto", -1, 1, "ddp_spawn"),
        ("auto", [0, 1], 1, "ddp_spawn"),
        ("auto", 1, 2, "ddp_spawn"),
        ("ddp", 2, 1, "ddp_spawn"),  # Lightning's ddp would rerun the program in every process
        ("ddp_spawn", 2, 1, "ddp_spawn"),
        ("fsdp", 2, 1, "fsdp"),  # anything else is the user's choice
    ],
)
def test_training_strategy(strategy: str, devices: int | str | list[int], num_nodes: int, expected: str) -> None:
    assert training_strategy(strategy, devices, num_nodes) == expected


def test_the_strategy_is_a_parameter_clone_keeps() -> None:
    from sklearn.base import clone

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

    model = AnomalyNCD(n_novel_classes=2, backbone="mobilenetv2_100", pretrained=False, views={"n_views": 2})
    discovery = DefectDiscovery(model, devices=2, strategy="ddp", num_nodes=1)
    copy = clone(discovery)
    assert copy.get_params()["strategy"] == "ddp" and copy.get_params()["devices"] == 2
