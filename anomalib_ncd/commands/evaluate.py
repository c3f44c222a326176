"""``anomalib-ncd evaluate``: metrics of a discovery run against ground-truth defect types."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from anomalib_ncd.commands.datasets import load_dataset
from anomalib_ncd.evaluation.metrics import HEADLINE, discovery_metrics
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.results import resolve_run


def evaluate(
    run: str,
    data: str | None = None,
    category: str | None = None,
    output: str | None = None,
) -> dict:
    """Score a run's classes against the true defect types: NMI, ARI, matched accuracy (F1), confusion.

    Args:
        run: a ``discover`` run folder (or its ``latest`` link), or a ``predict`` output folder.
        data: a dataset folder giving the true types (default: the types the run recorded).
        category: MVTec AD category of ``data``.
        output: where to write ``metrics.json`` (default: the run folder).

    Returns:
        The metrics.
    """
    folder = Path(run)
    table_file = folder / "assignments.csv"
    if not table_file.is_file():
        table_file = folder / "predictions.csv"
    if not table_file.is_file():
        folder = resolve_run(run)
        table_file = folder / "assignments.csv"
    if not table_file.is_file():
        msg = f"{folder} has no assignments.csv or predictions.csv: is the run complete?"
        raise FileNotFoundError(msg)
    assignments = pd.read_csv(table_file)
    region_file = folder / "regions.csv"
    regions = pd.read_csv(region_file) if region_file.is_file() and table_file.name == "assignments.csv" else None
    if data is not None:
        truth, _, _ = load_dataset(data, category, folder / "data", 0)
        paths = [str(Path(path).resolve()) for path in truth["image_path"]]
        types = dict(zip(paths, truth["defect_type"], strict=True))
        assignments["defect_type"] = [types.get(str(Path(path).resolve())) for path in assignments["image_path"]]
        missing = int(assignments["defect_type"].isna().sum())
        if missing:
            msg = f"{missing} images of the run are not in {data}"
            raise ValueError(msg)
    metrics = discovery_metrics(assignments, regions)
    atomic_write_text(Path(output or folder) / "metrics.json", json.dumps(metrics, indent=2))
    for level, values in metrics.items():
        scores = " / ".join(f"{key} {values[key]:.3f}" for key in HEADLINE[:3])
        print(f"{level:>6}: {scores} (n={values['n_samples']})")
    return metrics
