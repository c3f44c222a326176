"""Defect-discovery baselines: k-means on frozen features and Anomaly Clustering (Sohn et al., 2023)."""

from __future__ import annotations

from anomalib_ncd.baselines.anomaly_clustering import AnomalyClustering, auto_temperature
from anomalib_ncd.baselines.kmeans import KMeansBaseline, l2_normalize

__all__ = ["AnomalyClustering", "KMeansBaseline", "auto_temperature", "l2_normalize"]
