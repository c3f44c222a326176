"""Metrics of a discovery run from its result tables (``assignments.csv`` and ``regions.csv``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from anomalib_ncd.evaluation.clustering import ClusteringReport, clustering_report

HEADLINE = ("nmi", "ari", "f1", "n_samples")


def discovery_reports(
    assignments: pd.DataFrame, regions: pd.DataFrame | None = None, truth_column: str = "defect_type"
) -> dict[str, ClusteringReport]:
    """Clustering reports at image level and, given the region table, at region level.

    A region is scored against its image's type (the papers' region-level protocol). Predicted
    classes are compared by name, so the confusion table reads ``normal``, ``novel_1``, ...

    Args:
        assignments: one row per image with ``class_name`` and the ground truth.
        regions: one row per region with ``image_index`` and ``class_name``.
        truth_column: the ground-truth column of ``assignments``.

    Returns:
        ``{"image": report, "region": report}`` (no ``region`` without the region table).

    Raises:
        ValueError: when the ground truth is missing.
    """
    if truth_column not in assignments or assignments[truth_column].isna().any():
        msg = "the run has no ground-truth defect type for every image: nothing to evaluate against"
        raise ValueError(msg)
    truth = assignments[truth_column].astype(str).to_numpy()
    reports = {"image": clustering_report(truth, _discovered_names(assignments))}
    if regions is not None and len(regions):
        region_truth = truth[regions["image_index"].to_numpy()]
        reports["region"] = clustering_report(region_truth, _discovered_names(regions))
    return reports


def _discovered_names(table: pd.DataFrame) -> list[str]:
    """Each row's discovered class by name; rows flagged unknown keep their nearest class.

    Rejection is scored by its own benchmark; the clustering metrics judge the discovered classes,
    as the papers' protocol does.
    """
    if "unknown" not in table or "pred_class" not in table:
        return table["class_name"].astype(str).tolist()
    known = ~table["unknown"].astype(bool)
    names = dict(zip(table.loc[known, "pred_class"], table.loc[known, "class_name"].astype(str), strict=True))
    return [names.get(int(value), f"class_{int(value)}") for value in table["pred_class"]]


def discovery_metrics(
    assignments: pd.DataFrame, regions: pd.DataFrame | None = None, truth_column: str = "defect_type"
) -> dict[str, Any]:
    """:func:`discovery_reports` as JSON-ready data (``metrics.json``).

    Args:
        assignments: one row per image with ``class_name`` and the ground truth.
        regions: one row per region with ``image_index`` and ``class_name``.
        truth_column: the ground-truth column of ``assignments``.

    Returns:
        ``{level: report.as_dict()}``.
    """
    return {level: report.as_dict() for level, report in discovery_reports(assignments, regions, truth_column).items()}
