"""anomalib-ncd: which kind of defect does each anomalous part have?

The region stage of the pipeline (anomaly maps from any anomalib detector -> MEBin ->
anomaly-centred regions) is public here. Names are imported on first use, so that
``import anomalib_ncd.data`` stays light (anomalib itself takes seconds to import).

Example:
    >>> import anomalib_ncd
    >>> anomalib_ncd.MEBin().step
    4
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib_ncd.maps.export import AnomalyMapCollector, AnomalyMapExporter
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model, predict_maps
    from anomalib_ncd.maps.map_set import AnomalyMapSet, MapError
    from anomalib_ncd.regions.crops import CropSettings, Region
    from anomalib_ncd.regions.extract import RegionSet, extract_regions
    from anomalib_ncd.regions.mebin import MEBin, MEBinResult
    from anomalib_ncd.regions.post_processor import MEBinPostProcessor

_PUBLIC = {
    "AnomalyMapCollector": "anomalib_ncd.maps.export",
    "AnomalyMapExporter": "anomalib_ncd.maps.export",
    "AnomalyMapSet": "anomalib_ncd.maps.map_set",
    "CropSettings": "anomalib_ncd.regions.crops",
    "MEBin": "anomalib_ncd.regions.mebin",
    "MEBinPostProcessor": "anomalib_ncd.regions.post_processor",
    "MEBinResult": "anomalib_ncd.regions.mebin",
    "MapError": "anomalib_ncd.maps.map_set",
    "Region": "anomalib_ncd.regions.crops",
    "RegionSet": "anomalib_ncd.regions.extract",
    "extract_regions": "anomalib_ncd.regions.extract",
    "load_anomalib_model": "anomalib_ncd.maps.from_anomalib",
    "load_map_folder": "anomalib_ncd.maps.folder",
    "predict_maps": "anomalib_ncd.maps.from_anomalib",
}

__all__ = [
    "AnomalyMapCollector",
    "AnomalyMapExporter",
    "AnomalyMapSet",
    "CropSettings",
    "MEBin",
    "MEBinPostProcessor",
    "MEBinResult",
    "MapError",
    "Region",
    "RegionSet",
    "extract_regions",
    "load_anomalib_model",
    "load_map_folder",
    "predict_maps",
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
