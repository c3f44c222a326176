"""Helpers the benchmark scripts share (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from anomalib_ncd.commands.detector_maps import DetectorSettings
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.map_set import AnomalyMapSet


def peak_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def finish_report(report: dict[str, Any], out: Path, total_s: float, note: str = "") -> None:
    """Add the total time and peak memory to a benchmark's report, print them, write ``results.json``.

    Args:
        report: the benchmark's results (``total_s`` and ``peak_rss_gb`` are added).
        out: the output folder (created when missing).
        total_s: the run's time in seconds.
        note: printed after the time (e.g. what it excludes).
    """
    report["total_s"], report["peak_rss_gb"] = total_s, peak_gb()
    print(f"\ntotal {total_s:.0f} s{note}, peak RSS {report['peak_rss_gb']:.1f} GB")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(report, indent=2, default=str))


def fit_prepared(model: pl.LightningModule, epochs: int) -> float:
    """Train a prepared discovery model as users do: anomalib's ``Engine``, quiet, checkpoints in a temporary folder.

    Args:
        model: an :class:`~anomalib_ncd.AnomalyNCD` whose views are prepared.
        epochs: training epochs (``Engine(max_epochs=...)``, which the model honours).

    Returns:
        The training time in seconds.
    """
    from anomalib.engine import Engine

    with tempfile.TemporaryDirectory(prefix="benchmark_engine_") as root:
        engine = Engine(
            default_root_dir=root,
            max_epochs=epochs,
            accelerator="auto",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        engine.fit(model)
        return time.perf_counter() - start


def patchcore_maps(
    table: pd.DataFrame,
    test: pd.DataFrame,
    root: Path,
    settings: DetectorSettings,
    dataset: str,
) -> tuple[AnomalyMapSet, dict[str, float]]:
    """Raw maps of ``test`` from the Patchcore ``discover`` trains (the user's path), cached under ``root``.

    The checkpoint of an earlier run of the same settings under ``root`` is reused (its training time
    is then not measured again).

    Args:
        table: the sample table (its ``train`` rows train the detector).
        test: the images to map.
        root: folder of this detector's checkpoint.
        settings: the detector settings (input size, letterbox, backbone, coreset ratio, cap).
        dataset: dataset name.

    Returns:
        The maps (in ``test``'s order) and timings (``detector_fit_s`` when trained, ``detector_maps_s``).
    """
    from anomalib_ncd.commands.detector_maps import detector_maps_of, input_size, train_patchcore
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model

    times: dict[str, float] = {}
    found = sorted(root.glob("detector/Patchcore/**/weights/lightning/model.ckpt"))
    if found:
        model = load_anomalib_model(found[-1], "Patchcore")
        size = input_size(model)
        if size is None:
            msg = f"cannot read the input size of {found[-1]}"
            raise RuntimeError(msg)
        image_size = size[0]
    else:
        start = time.perf_counter()
        model, _, image_size, _ = train_patchcore(settings, table, dataset, "", root, "auto", 1, 0)
        times["detector_fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    maps = detector_maps_of(model, test, dataset, "", image_size, settings.letterbox, "auto", 1)
    if list(maps.image_paths) != [str(path) for path in test["image_path"]]:
        msg = "detector maps are not in the order of the discovery set"
        raise RuntimeError(msg)
    times["detector_maps_s"] = time.perf_counter() - start
    times["detector_input_size"] = float(image_size)
    return maps, times


def detector_quality(maps: AnomalyMapSet, samples: pd.DataFrame, stride: int = 2) -> dict[str, float]:
    """Image AUROC of the detector's scores, pixel AUROC of its maps at image resolution.

    Args:
        maps: the detector's maps of the samples (with their ground truth).
        samples: the sample table rows of the mapped images (masks or boxes of the defects).
        stride: every ``stride``-th pixel in each direction enters the pixel AUROC (memory).

    Returns:
        ``image_auroc`` and ``pixel_auroc``.
    """
    from sklearn.metrics import roc_auc_score

    from anomalib_ncd.data.masks import read_row_mask

    labels = ~np.asarray(maps.is_normal, dtype=bool)
    rows = {str(row["image_path"]): row for _, row in samples.iterrows()}
    scores, truth = [], []
    for path, anomaly_map in zip(maps.image_paths, maps.aligned(long_side=None), strict=True):
        row = rows[path]
        mask = np.zeros(anomaly_map.shape, bool) if row["is_normal"] else read_row_mask(row, anomaly_map.shape)
        scores.append(anomaly_map[::stride, ::stride].ravel())
        truth.append(mask[::stride, ::stride].ravel())
    return {
        "image_auroc": float(roc_auc_score(labels, np.asarray(maps.scores))),
        "pixel_auroc": float(roc_auc_score(np.concatenate(truth), np.concatenate(scores))),
    }
