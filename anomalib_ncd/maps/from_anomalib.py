"""Anomaly maps from any anomalib image model, through anomalib's own ``Engine.predict``.

Nothing here knows about a particular model: whatever localises anomalies (Patchcore, Padim,
EfficientAd, PRN, ...) fills ``anomaly_map`` in its predictions, and
:class:`~anomalib_ncd.maps.export.AnomalyMapCollector` takes the raw maps before anomalib's
post-processor rescales them.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from anomalib_ncd.maps.export import AnomalyMapCollector
from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError

if TYPE_CHECKING:
    from anomalib.data import AnomalibDataModule
    from anomalib.engine import Engine
    from anomalib.models import AnomalibModule


def load_anomalib_model(checkpoint: str | Path, model: str | type | None = None) -> AnomalibModule:
    """Load an anomalib model from a Lightning checkpoint.

    Args:
        checkpoint: path of ``model.ckpt``, e.g.
            ``results/Patchcore/MVTecAD/bottle/latest/weights/lightning/model.ckpt``.
        model: the model class, its name (``"Patchcore"``), or its import path
            (``"anomalib_ncd.models.Prn"``). When omitted, the name is taken from the anomalib results
            layout ``results/<Model>/...`` of the checkpoint path.

    Returns:
        The model with the checkpoint's weights, in eval mode.

    Raises:
        FileNotFoundError: when the checkpoint does not exist.
        ValueError: when the model class cannot be found or the file is not an anomalib checkpoint.
    """
    from anomalib.models import AnomalibModule

    from anomalib_ncd.backbones.offline_weights import register_offline_backbones

    path = Path(checkpoint)
    if not path.is_file():
        msg = f"checkpoint not found: {path}"
        raise FileNotFoundError(msg)
    if model is None:
        model = _model_name_from_results_path(path)
    if isinstance(model, str):
        if "." in model:
            module_name, _, class_name = model.rpartition(".")
            model_class = getattr(importlib.import_module(module_name), class_name)
        else:
            model_class = _anomalib_model_class(model)
    else:
        model_class = model
    if not (isinstance(model_class, type) and issubclass(model_class, AnomalibModule)):
        msg = f"{model!r} is not an anomalib model class"
        raise ValueError(msg)
    # the checkpoint holds every weight: building the backbone must not reach for the hub, and
    # our offline weight tags (e.g. mobilenetv2_100.tv_in1k) must be known to timm
    register_offline_backbones()
    overrides = {"pre_trained": False} if "pre_trained" in inspect.signature(model_class.__init__).parameters else {}
    try:
        loaded = model_class.load_from_checkpoint(str(path), map_location="cpu", weights_only=False, **overrides)
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        msg = f"{path} is not a checkpoint of an anomalib {model_class.__name__} model: {error}"
        raise ValueError(msg) from error
    return loaded.eval()


def _anomalib_model_class(name: str) -> type:
    """An anomalib model class by name (anomalib's or this plugin's), without instantiating it."""
    import anomalib.models

    import anomalib_ncd.models

    wanted = name.replace("_", "").lower()
    for package in (anomalib.models, anomalib_ncd.models):
        for attribute in dir(package):
            candidate = getattr(package, attribute)
            if isinstance(candidate, type) and attribute.lower() == wanted:
                return candidate
    msg = f"anomalib has no model named {name!r}; give its import path instead (e.g. 'package.module.Class')"
    raise ValueError(msg)


def _model_name_from_results_path(path: Path) -> str:
    """The anomalib model a checkpoint belongs to, from anomalib's ``<Model>/<dataset>/...`` layout.

    The folders above the checkpoint are searched from the nearest up, so a results root nested
    anywhere (``results/benchmarks/x/Patchcore/MTD/...``) still names its model.
    """
    for part in reversed(path.resolve().parent.parts):
        with contextlib.suppress(ValueError):
            _anomalib_model_class(part)
            return part
    msg = (
        f"cannot tell the model class of {path}: give it explicitly (e.g. model='Patchcore') or keep the "
        "checkpoint in anomalib's results/<Model>/... layout"
    )
    raise ValueError(msg)


def _add_callback(engine: Engine, callback: AnomalyMapCollector) -> None:
    """Add ``callback`` ahead of the model's own callbacks, whether or not the trainer exists yet."""
    from anomalib.engine.engine import UnassignedError

    try:
        engine.trainer.callbacks.insert(0, callback)
    except UnassignedError:
        # the trainer is built at the first call; anomalib keeps its future arguments in _cache
        engine._cache.args["callbacks"].append(callback)


def _remove_callback(engine: Engine, callback: AnomalyMapCollector) -> None:
    from anomalib.engine.engine import UnassignedError

    try:
        callbacks = engine.trainer.callbacks
    except UnassignedError:
        callbacks = engine._cache.args["callbacks"]
    if callback in callbacks:
        callbacks.remove(callback)
    cached = engine._cache.args["callbacks"]
    if callback in cached:
        cached.remove(callback)


def predict_maps(
    model: AnomalibModule,
    data: AnomalibDataModule | torch.utils.data.DataLoader | str | Path,
    *,
    engine: Engine | None = None,
    ckpt_path: str | Path | None = None,
    samples: pd.DataFrame | None = None,
    **engine_kwargs: Any,
) -> AnomalyMapSet:
    """Run an anomalib model with ``Engine.predict`` and collect its raw anomaly maps.

    Args:
        model: any anomalib image model that produces anomaly maps.
        data: a datamodule (its predict/test split is used), a dataloader, or an image folder/file.
        engine: an anomalib ``Engine`` to use; a new one is made (with ``engine_kwargs``) when omitted.
            The collector callback is added to its trainer for this call.
        ckpt_path: checkpoint to load into ``model`` before predicting.
        samples: a sample table to take defect types and masks from.
        **engine_kwargs: arguments for a new ``Engine`` (e.g. ``accelerator="gpu", devices=1``).

    Returns:
        The raw maps, with image paths and detector scores.

    Raises:
        MapError: when the model produced no anomaly maps.
    """
    from anomalib.data import AnomalibDataModule as DataModule
    from anomalib.engine import Engine as AnomalibEngine

    collector = AnomalyMapCollector()
    if engine is None:
        engine_kwargs.setdefault("logger", False)
        engine = AnomalibEngine(callbacks=[collector], **engine_kwargs)
    else:
        _add_callback(engine, collector)
    try:
        kwargs: dict[str, Any] = {"model": model, "ckpt_path": ckpt_path, "return_predictions": False}
        if isinstance(data, DataModule):
            kwargs["datamodule"] = data
        elif isinstance(data, str | Path):
            kwargs["data_path"] = data
        else:
            kwargs["dataloaders"] = data
        engine.predict(**kwargs)
    finally:
        _remove_callback(engine, collector)
    records = collector.records
    if not records:
        msg = "the detector produced no predictions (empty data?)"
        raise MapError(msg)
    map_set = AnomalyMapSet(
        maps=[record["anomaly_map"] for record in records],
        image_paths=[record["image_path"] for record in records],
        scores=[
            float(record["pred_score"]) if record["pred_score"] is not None else float("nan") for record in records
        ],
    )
    return map_set.with_samples(samples) if samples is not None else map_set
