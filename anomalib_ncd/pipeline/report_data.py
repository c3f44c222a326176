"""What the HTML report of a discovery run shows, gathered from the fitted estimator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anomalib_ncd.pipeline.estimator import DefectDiscovery
    from anomalib_ncd.regions.mebin import MEBin
    from anomalib_ncd.report import ReportData

N_MEBIN_CURVES = 4


def discovery_report_data(
    discovery: DefectDiscovery, title: str, metrics: dict[str, Any] | None, config: dict[str, Any]
) -> ReportData:
    """The report's content for a fitted :class:`~anomalib_ncd.pipeline.estimator.DefectDiscovery`.

    Args:
        discovery: the fitted estimator.
        title: the report's title.
        metrics: ``metrics.json``'s content, when ground truth is known.
        config: the settings shown in the report's appendix.

    Returns:
        The report data.
    """
    from anomalib_ncd.report import ReportData

    regions_set = discovery.regions_
    images = discovery.assignments_.copy()
    if "defect_type" not in images:
        images["defect_type"] = None
    confusion = None
    if metrics is not None:
        table = metrics["image"]["confusion"]
        confusion = pd.DataFrame(table["data"], index=table["index"], columns=table["columns"])
    return ReportData(
        title=title,
        images=images,
        regions=discovery.region_table(),
        maps=regions_set.map_set.maps,
        map_range=overlay_range(regions_set.mebin, regions_set.map_set.maps),
        class_names=discovery.model_.class_names,
        features=discovery.classification_.region_features,
        metrics=metrics,
        confusion=confusion,
        mebin_curves=mebin_curves(discovery),
        settings=config,
        class_count=None if discovery.class_count_ is None else discovery.class_count_.as_dict(),
        object_prior=discovery.model_.object_prior,
        unknown_threshold=_finite_or_none(float(discovery.model_.unknown_image_threshold)),
    )


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _short_path(path: str) -> str:
    """The image's folder and file name (``crack/000.png``): datasets reuse file names across types."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


def overlay_range(mebin: MEBin | None, maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """The map values that span the overlay's colour scale: MEBin's range, else the maps' own.

    Regions cut from ground-truth masks (or given by a caller) have no MEBin; their maps are 0/1
    masks or whatever the caller passed, so their own minimum and maximum span the scale.

    Args:
        mebin: the run's MEBin, or ``None``.
        maps: the anomaly maps of the report.

    Returns:
        ``(low, high)``.
    """
    if mebin is not None and mebin.is_fitted:
        return mebin.fitted_range()
    finite = [m[np.isfinite(m)] for m in maps]
    values = [v for v in finite if v.size]
    if not values:
        return 0.0, 1.0
    return float(min(v.min() for v in values)), float(max(v.max() for v in values))


def mebin_curves(discovery: DefectDiscovery, n_curves: int = N_MEBIN_CURVES) -> list[dict[str, Any]]:
    """MEBin's component-count curves of a few images: the most-defect images first, and one without.

    Args:
        discovery: the fitted estimator.
        n_curves: how many images.

    Returns:
        One dict per image (see :class:`~anomalib_ncd.report.ReportData`).
    """
    regions_set = discovery.regions_
    results = regions_set.binarization
    if not results or regions_set.mebin is None:  # no MEBin ran (ground-truth regions)
        return []
    counts = np.array([result.anomaly_count for result in results])
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0][: n_curves - 1]
    without = np.flatnonzero(counts == 0)
    if len(without):
        order.append(int(without[0]))
    thresholds = regions_set.mebin.thresholds
    return [
        {
            "image": _short_path(regions_set.map_set.image_paths[index]),
            "count_sequence": results[index].count_sequence,
            "thresholds": thresholds[: len(results[index].count_sequence)],
            "stable_interval": results[index].stable_interval,
            "chosen_threshold": int(results[index].normalized_threshold),
        }
        for index in order
    ]
