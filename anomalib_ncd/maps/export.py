"""Lightning callbacks that capture the raw float anomaly maps of any anomalib model.

anomalib's post-processor rescales maps to ``[0, 1]`` around its threshold and clips them, and
``anomalib predict`` writes only visualisations. Class discovery needs the raw maps (MEBin looks at
their whole range), so these callbacks take them at ``on_predict_batch_end`` / ``on_test_batch_end``.
Trainer callbacks run before the callbacks a model brings (its post-processor among them), so the
maps seen here are the model's raw output.

Use with the Python API (``Engine(callbacks=[AnomalyMapExporter("maps")])``) or with anomalib's
CLI (``anomalib predict ... --trainer.callbacks+=anomalib_ncd.maps.AnomalyMapExporter
--trainer.callbacks.output_dir=maps``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_ncd.data.image_io import read_image_size
from anomalib_ncd.io import atomic_write_path, atomic_write_text
from anomalib_ncd.maps.map_set import AnomalyMapSet

logger = logging.getLogger(__name__)

INDEX_FILE = "index.csv"
INDEX_COLUMNS = ("map_file", "image_path", "image_height", "image_width", "pred_score", "gt_label")


def _as_list(value: Any, size: int) -> list:
    """Per-sample values of a batch field, ``None`` entries when the field is absent."""
    if value is None:
        return [None] * size
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().reshape(size, -1)[:, 0].tolist() if value.numel() >= size else [None] * size
    return list(value)


class AnomalyMapCollector(Callback):
    """Collect the raw anomaly maps, image paths and scores of every predicted (or tested) batch.

    Attributes:
        records: one dict per image with ``anomaly_map`` (float32 ``(h, w)``), ``image_path``,
            ``pred_score`` and ``gt_label`` (``None`` when unknown).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def take(self, outputs: Any) -> None:
        """Keep the raw maps of one batch of outputs.

        Args:
            outputs: anything with ``anomaly_map`` (``(B, h, w)`` or ``(B, 1, h, w)``) and optionally
                ``image_path``, ``pred_score`` and ``gt_label`` (an anomalib batch).

        Raises:
            ValueError: when the outputs carry no anomaly map.
        """
        anomaly_maps = getattr(outputs, "anomaly_map", None)
        if anomaly_maps is None:
            msg = "the model's predictions carry no anomaly_map; use a model that localises anomalies"
            raise ValueError(msg)
        maps = anomaly_maps.detach().float().cpu().numpy()
        if maps.ndim == 4:
            maps = maps[:, 0]
        size = maps.shape[0]
        paths = _as_list(getattr(outputs, "image_path", None), size)
        scores = _as_list(getattr(outputs, "pred_score", None), size)
        labels = _as_list(getattr(outputs, "gt_label", None), size)
        for index in range(size):
            self.records.append(
                {
                    "anomaly_map": np.ascontiguousarray(maps[index], dtype=np.float32),
                    "image_path": str(paths[index]) if paths[index] is not None else None,
                    "pred_score": scores[index],
                    "gt_label": labels[index],
                },
            )

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh collection for each prediction run."""
        del trainer, pl_module
        self.records = []

    on_test_start = on_predict_start

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Take the raw maps of a predicted (or tested) batch."""
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        self.take(outputs)

    # testing a model gives the same raw maps
    on_test_batch_end = on_predict_batch_end


class ValidationMapCollector(AnomalyMapCollector):
    """Collect the raw maps of a fit's validation pass (Lightning's sanity check left out).

    anomalib's ``Engine.fit`` validates a detector to set its thresholds; where the validation
    images are the images to map next (``discover``'s Patchcore: validation = test split), taking
    their maps here spares a second pass of the detector over the same images.
    """

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the maps of an earlier validation (only the last pass counts)."""
        del pl_module
        if not trainer.sanity_checking:
            self.records = []

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Take the raw maps of a validated batch."""
        del pl_module, batch, batch_idx, dataloader_idx
        if not trainer.sanity_checking:
            self.take(outputs)


class AnomalyMapExporter(AnomalyMapCollector):
    """Write the raw float anomaly maps as ``.npy`` files with an ``index.csv``.

    Each map is written atomically as it arrives; the index is written (atomically) at the end of
    the run and lists ``map_file`` (relative to ``output_dir``), ``image_path``, the image size,
    ``pred_score`` and ``gt_label``. :func:`anomalib_ncd.maps.load_map_folder` reads it back.

    Args:
        output_dir: folder for the maps and the index.
        keep_in_memory: also keep the maps in :attr:`records` (off by default to save memory).
    """

    def __init__(self, output_dir: str | Path = "anomaly_maps", keep_in_memory: bool = False) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.keep_in_memory = keep_in_memory
        self._rows: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh index for each run."""
        super().on_predict_start(trainer, pl_module)
        self._rows = []

    on_test_start = on_predict_start

    def take(self, outputs: Any) -> None:
        """Keep the raw maps of one batch and write each one as it arrives."""
        first = len(self.records)
        super().take(outputs)
        for record in self.records[first:]:
            self._rows.append(
                _write_map(self.output_dir, len(self._rows), record["anomaly_map"], record["image_path"], None)
                | {"pred_score": record["pred_score"], "gt_label": record["gt_label"]}
            )
        if not self.keep_in_memory:
            for record in self.records[first:]:
                record["anomaly_map"] = None

    def _write_index(self) -> None:
        _write_index(self.output_dir, self._rows)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the index of the maps of this run."""
        del trainer, pl_module
        self._write_index()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the index of the maps of this run."""
        del trainer, pl_module
        self._write_index()


def _write_map(
    output_dir: Path, number: int, anomaly_map: np.ndarray, image_path: str | None, shape: tuple[int, int] | None
) -> dict[str, Any]:
    """Write one map atomically as ``maps/<number>_<image stem>.npy``; return its index row."""
    stem = Path(image_path).stem if image_path else "image"
    relative = Path("maps") / f"{number:06d}_{stem}.npy"
    with atomic_write_path(output_dir / relative) as tmp, tmp.open("wb") as handle:
        np.save(handle, anomaly_map)
    if shape is None and image_path and Path(image_path).is_file():
        shape = read_image_size(image_path)
    height, width = shape if shape is not None else (None, None)
    return {"map_file": relative.as_posix(), "image_path": image_path, "image_height": height, "image_width": width}


def _write_index(output_dir: Path, rows: list[dict[str, Any]]) -> None:
    table = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    atomic_write_text(output_dir / INDEX_FILE, table.to_csv(index=False))
    logger.info("Wrote %d raw anomaly maps to %s", len(table), output_dir)


def save_map_set(map_set: AnomalyMapSet, output_dir: str | Path) -> Path:
    """Write a map set in the exporter's format (``.npy`` maps and ``index.csv``).

    The index is written last, so a folder with an index always holds every map it lists;
    :func:`~anomalib_ncd.maps.folder.load_map_folder` reads it back.

    Args:
        map_set: the maps.
        output_dir: the folder.

    Returns:
        The index file.
    """
    root = Path(output_dir)
    scores: Sequence[float | None] = map_set.scores or [None] * len(map_set)
    labels: Sequence[bool | None] = map_set.is_normal or [None] * len(map_set)
    rows = [
        _write_map(root, number, anomaly_map, path, shape)
        | {"pred_score": score, "gt_label": None if normal is None else int(not normal)}
        for number, (anomaly_map, path, shape, score, normal) in enumerate(
            zip(map_set.maps, map_set.image_paths, map_set.image_shapes, scores, labels, strict=True)
        )
    ]
    _write_index(root, rows)
    return root / INDEX_FILE
