"""anomalib-ncd: which kind of defect does each anomalous part have?

The pipeline is public here: the region stage (anomaly maps from any anomalib detector -> MEBin ->
anomaly-centred regions), the discovery model (:class:`AnomalyNCD`, an anomalib model) and the
whole job as a scikit-learn style estimator (:class:`DefectDiscovery`: ``fit`` / ``predict``).
Names are imported on first use, so that ``import anomalib_ncd.data`` stays light (anomalib itself
takes seconds to import).

Example:
    >>> import anomalib_ncd
    >>> anomalib_ncd.MEBin().step
    4
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib_ncd.baselines.anomaly_clustering import AnomalyClustering
    from anomalib_ncd.baselines.kmeans import KMeansBaseline
    from anomalib_ncd.discovery.batch import DiscoveryBatch
    from anomalib_ncd.discovery.class_count import ClassCountSettings, estimate_class_count
    from anomalib_ncd.discovery.classification import ImageClassification
    from anomalib_ncd.discovery.guidance import GuidanceSettings
    from anomalib_ncd.discovery.known_classes import known_class_regions
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD, TrainingSettings
    from anomalib_ncd.discovery.losses import LossWeights
    from anomalib_ncd.discovery.views import ViewSettings
    from anomalib_ncd.evaluation.clustering import clustering_report
    from anomalib_ncd.evaluation.metrics import discovery_metrics
    from anomalib_ncd.maps.export import AnomalyMapCollector, AnomalyMapExporter
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model, predict_maps
    from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError
    from anomalib_ncd.pipeline.estimator import DefectDiscovery
    from anomalib_ncd.regions.crops import CropSettings, Region
    from anomalib_ncd.regions.extract import (
        NothingToDiscoverError,
        RegionSet,
        extract_regions,
        ground_truth_regions,
        regions_of_image,
    )
    from anomalib_ncd.regions.mebin import MEBin, MEBinResult
    from anomalib_ncd.regions.post_processor import MEBinPostProcessor

_PUBLIC = {
    "AnomalyClustering": "anomalib_ncd.baselines.anomaly_clustering",
    "AnomalyMapCollector": "anomalib_ncd.maps.export",
    "AnomalyMapExporter": "anomalib_ncd.maps.export",
    "AnomalyMapSet": "anomalib_ncd.maps.map_set",
    "AnomalyNCD": "anomalib_ncd.discovery.lightning_model",
    "ClassCountSettings": "anomalib_ncd.discovery.class_count",
    "estimate_class_count": "anomalib_ncd.discovery.class_count",
    "CropSettings": "anomalib_ncd.regions.crops",
    "DiscoveryBatch": "anomalib_ncd.discovery.batch",
    "DefectDiscovery": "anomalib_ncd.pipeline.estimator",
    "GuidanceSettings": "anomalib_ncd.discovery.guidance",
    "ImageClassification": "anomalib_ncd.discovery.classification",
    "KMeansBaseline": "anomalib_ncd.baselines.kmeans",
    "LossWeights": "anomalib_ncd.discovery.losses",
    "MEBin": "anomalib_ncd.regions.mebin",
    "MEBinPostProcessor": "anomalib_ncd.regions.post_processor",
    "MEBinResult": "anomalib_ncd.regions.mebin",
    "MapError": "anomalib_ncd.maps.map_set",
    "NothingToDiscoverError": "anomalib_ncd.regions.extract",
    "Region": "anomalib_ncd.regions.crops",
    "RegionSet": "anomalib_ncd.regions.extract",
    "TrainingSettings": "anomalib_ncd.discovery.lightning_model",
    "ViewSettings": "anomalib_ncd.discovery.views",
    "clustering_report": "anomalib_ncd.evaluation.clustering",
    "discovery_metrics": "anomalib_ncd.evaluation.metrics",
    "extract_regions": "anomalib_ncd.regions.extract",
    "ground_truth_regions": "anomalib_ncd.regions.extract",
    "known_class_regions": "anomalib_ncd.discovery.known_classes",
    "load_anomalib_model": "anomalib_ncd.maps.from_anomalib",
    "load_map_folder": "anomalib_ncd.maps.folder",
    "predict_maps": "anomalib_ncd.maps.from_anomalib",
    "regions_of_image": "anomalib_ncd.regions.extract",
}

__all__ = [
    "AnomalyClustering",
    "AnomalyMapCollector",
    "AnomalyMapExporter",
    "AnomalyMapSet",
    "AnomalyNCD",
    "ClassCountSettings",
    "CropSettings",
    "DefectDiscovery",
    "DiscoveryBatch",
    "GuidanceSettings",
    "ImageClassification",
    "KMeansBaseline",
    "LossWeights",
    "MEBin",
    "MEBinPostProcessor",
    "MEBinResult",
    "MapError",
    "NothingToDiscoverError",
    "Region",
    "RegionSet",
    "TrainingSettings",
    "ViewSettings",
    "clustering_report",
    "discovery_metrics",
    "estimate_class_count",
    "extract_regions",
    "ground_truth_regions",
    "known_class_regions",
    "load_anomalib_model",
    "load_map_folder",
    "predict_maps",
    "regions_of_image",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first access."""
    if name not in _PUBLIC:
        msg = f"module 'anomalib_ncd' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
