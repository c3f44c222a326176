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
from collections.abc import Callable, Iterable
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


TRUST_ADVICE = (
    "if you trust the file (e.g. you trained it yourself), load it anyway with --detector.trust_checkpoint true "
    "(Python: trust_checkpoint=True)"
)


def load_anomalib_model(
    checkpoint: str | Path, model: str | type | None = None, *, trust_checkpoint: bool = False
) -> AnomalibModule:
    """Load an anomalib model from a Lightning checkpoint, without letting the file run code.

    The file is read with ``torch.load(weights_only=True)`` and anomalib's allow-list of safe types
    (:mod:`anomalib_ncd.checkpoints`), which covers the checkpoints ``anomalib train`` and
    ``Engine.fit`` write for Patchcore and PRN. A checkpoint that needs other types is refused,
    naming them, unless ``trust_checkpoint``.

    Args:
        checkpoint: path of ``model.ckpt``, e.g.
            ``results/Patchcore/MVTecAD/bottle/latest/weights/lightning/model.ckpt``.
        model: the model class, its name (``"Patchcore"``), or its import path
            (``"anomalib_ncd.models.Prn"``). When omitted, the name is taken from the anomalib results
            layout ``results/<Model>/...`` of the checkpoint path.
        trust_checkpoint: load the file in full (``weights_only=False``) even when it needs types
            outside the allow-list. Unpickling such a file can run arbitrary code: only for a file
            you made yourself or got from a source you trust.

    Returns:
        The model with the checkpoint's weights, in eval mode.

    Raises:
        FileNotFoundError: when the checkpoint does not exist.
        UnsafeCheckpointError: when the file needs types outside the allow-list.
        ValueError: when the model class cannot be found or the file is not an anomalib checkpoint.
    """
    from anomalib_ncd.backbones.memory_format import channels_last
    from anomalib_ncd.backbones.offline_weights import register_offline_backbones
    from anomalib_ncd.checkpoints import safe_loading

    path = Path(checkpoint)
    model_class = check_anomalib_checkpoint(path, model, trust_checkpoint=trust_checkpoint)
    # the checkpoint holds every weight: building the backbone must not reach for the hub, and
    # our offline weight tags (e.g. mobilenetv2_100.tv_in1k) must be known to timm
    register_offline_backbones()
    overrides: dict[str, Any] = (
        {"pre_trained": False} if "pre_trained" in inspect.signature(model_class.__init__).parameters else {}
    )
    try:
        with safe_loading(model_class):
            loaded = model_class.load_from_checkpoint(
                str(path), map_location="cpu", weights_only=not trust_checkpoint, **overrides
            )
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        msg = f"{path} is not a checkpoint of an anomalib {model_class.__name__} model: {error}"
        raise ValueError(msg) from error
    return channels_last(loaded).eval()


def check_anomalib_checkpoint(
    checkpoint: str | Path, model: str | type | None = None, *, trust_checkpoint: bool = False
) -> type[AnomalibModule]:
    """Check, before anything runs, that a file is a safe anomalib checkpoint, and find its model class.

    Reads the file as data (memory-mapped, so cheap) as :func:`load_anomalib_model` will.

    Args:
        checkpoint: the checkpoint file.
        model: the model class, its name or its import path; ``None``: from the ``results/<Model>/``
            layout of the path.
        trust_checkpoint: read the file in full even when it needs types outside the allow-list
            (it may then run code).

    Returns:
        The model class.

    Raises:
        FileNotFoundError: when the checkpoint does not exist.
        UnsafeCheckpointError: when the file needs types outside the allow-list.
        ValueError: when the model class cannot be found, or the file is unreadable or not a Lightning
            checkpoint.
    """
    from anomalib_ncd.checkpoints import read_checkpoint, require_lightning_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        msg = f"checkpoint not found: {path}"
        raise FileNotFoundError(msg)
    model_class = anomalib_model_class(path if model is None else model)
    content = read_checkpoint(
        path, model_class=model_class, trust=trust_checkpoint, advice=TRUST_ADVICE, what="detector checkpoint"
    )
    require_lightning_checkpoint(content, path, f"a checkpoint of an anomalib {model_class.__name__} model")
    return model_class


def anomalib_model_class(model: str | type | Path) -> type[AnomalibModule]:
    """An anomalib model class from a class, a name, an import path, or a checkpoint's results path.

    Args:
        model: the class; its name (``Patchcore``, anomalib's or this plugin's); its import path
            (``anomalib_ncd.models.Prn``); or a checkpoint path in anomalib's ``results/<Model>/...``
            layout.

    Returns:
        The class.

    Raises:
        ValueError: when no anomalib model class is found.
    """
    from anomalib.models import AnomalibModule

    if isinstance(model, Path):
        model = _model_name_from_results_path(model)
    if isinstance(model, str):
        if "." in model:
            module_name, _, class_name = model.rpartition(".")
            try:
                model_class = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as error:
                msg = f"cannot import the detector model class {model!r}: {error}"
                raise ValueError(msg) from error
        else:
            model_class = _anomalib_model_class(model)
    else:
        model_class = model
    if not (isinstance(model_class, type) and issubclass(model_class, AnomalibModule)):
        msg = f"{model!r} is not an anomalib model class"
        raise ValueError(msg)
    return model_class


def model_class_name(model: AnomalibModule | type) -> str:
    """What to record of a detector's class so that :func:`anomalib_model_class` finds it again.

    Args:
        model: the model or its class.

    Returns:
        Its name when anomalib (or this plugin) knows it by name, else its import path.
    """
    model_class = model if isinstance(model, type) else type(model)
    with contextlib.suppress(ValueError):
        if _anomalib_model_class(model_class.__name__) is model_class:
            return model_class.__name__
    return f"{model_class.__module__}.{model_class.__qualname__}"


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
        f"cannot tell the model class of {path}: give it explicitly (--detector.model Patchcore; Python: "
        "model='Patchcore') or keep the checkpoint in anomalib's results/<Model>/... layout"
    )
    raise ValueError(msg)


def _add_callback(engine: Engine, callback: AnomalyMapCollector) -> None:
    """Add ``callback`` ahead of the model's own callbacks, whether or not the trainer exists yet."""
    from anomalib.engine.engine import UnassignedError

    try:
        # Lightning's Trainer sets its callbacks list in its callback connector, undeclared on the class
        engine.trainer.callbacks.insert(0, callback)  # type: ignore[attr-defined]
    except UnassignedError:
        # the trainer is built at the first call; anomalib keeps its future arguments in _cache
        engine._cache.args["callbacks"].append(callback)


def _remove_callback(engine: Engine, callback: AnomalyMapCollector) -> None:
    from anomalib.engine.engine import UnassignedError

    try:
        callbacks = engine.trainer.callbacks  # type: ignore[attr-defined]  # see _add_callback
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
    return map_set_of(collector.records, samples)


def map_set_of(records: list[dict[str, Any]], samples: pd.DataFrame | None = None) -> AnomalyMapSet:
    """The map set of a collector's records (:class:`~anomalib_ncd.maps.export.AnomalyMapCollector`).

    Args:
        records: the collected records, one per image.
        samples: a sample table to take defect types and masks from.

    Returns:
        The raw maps, with image paths and detector scores.

    Raises:
        MapError: when there is no record.
    """
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


@torch.no_grad()
def raw_anomaly_maps(detector: AnomalibModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A detector's raw anomaly maps and scores: its pre-processor and torch model, no post-processing.

    anomalib's post-processor normalises and clips maps to ``[0, 1]``; MEBin needs them unclipped.

    Args:
        detector: a trained anomalib model.
        images: ``(B, C, H, W)`` images in ``[0, 1]``.

    Returns:
        ``(B, 1, h, w)`` raw maps and ``(B,)`` raw scores (``None`` when the model gives none).
    """
    device = next(detector.parameters(), torch.empty(0)).device
    batch = images.to(device)
    if detector.pre_processor:
        batch = detector.pre_processor(batch)
    output = detector.model(batch)
    if output.anomaly_map is None:
        msg = f"{type(detector).__name__} produced no anomaly map"
        raise ValueError(msg)
    return output.anomaly_map, output.pred_score


def raw_maps_of(
    detector: AnomalibModule,
    dataloader: Iterable[Any],
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnomalyMapSet:
    """The raw maps of every image a dataloader gives, in one loop (no Trainer of its own).

    For a model's own hooks, where a nested ``Engine.predict`` (:func:`predict_maps`) would start a
    second Trainer inside a running one.

    Args:
        detector: a trained anomalib model.
        dataloader: anomalib batches (``image``, ``image_path``, ``gt_label``), e.g. a datamodule's
            ``test_dataloader()``.
        device: where the detector runs (default: where it is).
        progress: called with the number of images after each batch (default: a progress bar).

    Returns:
        The raw maps, with image paths and detector scores.

    Raises:
        MapError: when the dataloader gave no image.
    """
    from types import SimpleNamespace

    from anomalib_ncd.progress import progress_bar

    if device is not None:
        detector.to(device)
    detector.eval()
    collector = AnomalyMapCollector()
    total = len(dataloader.dataset) if isinstance(dataloader, torch.utils.data.DataLoader) else 0  # type: ignore[arg-type]
    with progress_bar("Detector maps", total, progress) as advance:
        for batch in dataloader:
            anomaly_map, pred_score = raw_anomaly_maps(detector, batch.image)
            outputs = SimpleNamespace(
                anomaly_map=anomaly_map, image_path=batch.image_path, pred_score=pred_score, gt_label=batch.gt_label
            )
            collector.take(outputs)
            advance(len(batch.image))
    return map_set_of(collector.records)
