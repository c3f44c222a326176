"""Evaluation of discovered defect classes: NMI, ARI and Hungarian-matched accuracy ("F1")."""

from __future__ import annotations

from anomalib_ncd.evaluation.clustering import (
    ClusteringReport,
    Labels,
    clustering_accuracy,
    clustering_report,
    hungarian_mapping,
)

__all__ = [
    "ClusteringReport",
    "Labels",
    "clustering_accuracy",
    "clustering_report",
    "hungarian_mapping",
]
