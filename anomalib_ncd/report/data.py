"""What a discovery report shows: the per-image and per-region tables, anomaly maps and extras.

:class:`ReportData` is checked when it is built, so a malformed run fails with a message that names
the problem instead of half-way through rendering the HTML.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IMAGE_COLUMNS: tuple[str, ...] = (
    "image_path",
    "pred_class",
    "class_name",
    "confidence",
    "anomaly_score",
    "n_regions",
)
"""Columns :attr:`ReportData.images` must have (optional: ``defect_type``, ground truth when known, and
``unknown`` / ``unknown_score``, the images that fit no class, shown in a gallery of their own)."""

REGION_COLUMNS: tuple[str, ...] = (
    "region",
    "image_index",
    "x0",
    "y0",
    "x1",
    "y1",
    "pred_class",
    "confidence",
    "score",
    "whole_image",
)
"""Columns :attr:`ReportData.regions` must have."""

MEBIN_CURVE_KEYS: tuple[str, ...] = ("image", "count_sequence", "thresholds", "stable_interval", "chosen_threshold")
"""Keys every entry of :attr:`ReportData.mebin_curves` must have."""


@dataclass
class ReportData:
    """Everything the HTML report of one discovery run shows.

    Attributes:
        title: Report title, e.g. ``"synthetic / brick - v3"``.
        images: One row per image with the columns :data:`IMAGE_COLUMNS` and optionally
            ``defect_type`` (ground truth, ``None`` where unknown). Its index is reset, so row ``i``
            is image ``i``.
        regions: One row per region with the columns :data:`REGION_COLUMNS`; ``image_index`` is a
            row of ``images``, the box ``x0, y0, x1, y1`` is in image pixels with exclusive ends.
        maps: One float anomaly map per image, any resolution and scale.
        map_range: ``(low, high)`` that maps the anomaly maps onto the overlay colour scale.
        class_names: Display name of each class index.
        features: ``(R, D)`` region features for the embedding plot, one row per region row.
        metrics: ``{"image": ..., "region": ...}``, each a ``ClusteringReport.as_dict()``; ``None``
            without ground truth.
        confusion: Image-level confusion table (rows true types, columns clusters).
        mebin_curves: MEBin sweeps of a few images, each with the keys :data:`MEBIN_CURVE_KEYS`.
        settings: The resolved run configuration, shown in an appendix.
        object_prior: The run's object prior, if any: its object outline is drawn on each gallery image.
        max_per_class: Thumbnails per class gallery (highest confidence first).
        thumbnail_size: Long side of the thumbnails in pixels.
        run_id: The run the page shows (``<dataset>/<category>/vN``); the review panel keeps its edits
            under it and writes it into ``review.json``.
        detector: The anomaly detector's model class, named in the header.
        created: When the report was written (ISO 8601, UTC); empty: now.
        unknown_threshold: The image unknown score above which an image is flagged unknown (shown
            beside each score); ``None`` when not calibrated.
    """

    title: str
    images: pd.DataFrame
    regions: pd.DataFrame
    maps: list[np.ndarray]
    map_range: tuple[float, float]
    class_names: list[str]
    features: np.ndarray | None = None
    metrics: dict | None = None
    confusion: pd.DataFrame | None = None
    mebin_curves: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    class_count: dict | None = None  # the estimate of the number of classes: candidates, scores, n_classes
    object_prior: Any | None = None  # the run's object prior (``mask(image, path)``): outlines in the gallery
    max_per_class: int = 24
    thumbnail_size: int = 128
    run_id: str = ""  # the run the page belongs to: its review panel saves edits under this name
    detector: str = ""  # the anomaly detector's model class, named in the header
    created: str = ""  # when the report was written (ISO 8601); default: now
    unknown_threshold: float | None = None  # image unknown scores above it are flagged unknown

    def __post_init__(self) -> None:
        """Check shapes and cross-references; the tables get a plain ``0 .. n-1`` row index.

        Raises:
            ValueError: naming the first inconsistency found.
        """
        _require_columns(self.images, IMAGE_COLUMNS, "images")
        _require_columns(self.regions, REGION_COLUMNS, "regions")
        # Rows are addressed by position everywhere (image_index is "a row of images").
        self.images = self.images.reset_index(drop=True)
        self.regions = self.regions.reset_index(drop=True)
        _check_maps(self.maps, len(self.images))
        _check_image_index(self.regions, len(self.images))
        _check_classes(self.images, "images", len(self.class_names))
        _check_classes(self.regions, "regions", len(self.class_names))
        _check_features(self.features, len(self.regions))
        self.map_range = _checked_range(self.map_range)
        for position, curve in enumerate(self.mebin_curves):
            _check_mebin_curve(curve, position)
        _check_positive(self.max_per_class, "max_per_class")
        _check_positive(self.thumbnail_size, "thumbnail_size")
        self._image_root: str | None = None
        self._scores: np.ndarray | None = None
        self._sorted_scores = np.empty(0)
        if not self.created:
            from datetime import datetime, timezone

            self.created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def display_name(self, row: int) -> str:
        """An image's path relative to the folder all images share (its type folders included).

        Args:
            row: the image's row.

        Returns:
            e.g. ``MT_Blowhole/Imgs/exp1_num_265077.jpg``; the file name alone for a single image.
        """
        paths = [str(path) for path in self.images["image_path"]]
        if self._image_root is None:
            parents = [str(Path(path).parent) for path in paths]
            self._image_root = os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]
        return os.path.relpath(paths[row], self._image_root) if self._image_root else paths[row]

    def anomaly_score_share(self, row: int) -> float | None:
        """The share of the run's images scoring at least this image's anomaly score (its rank, 1/n = top).

        Args:
            row: the image's row.

        Returns:
            ``(images scoring higher + 1) / images with a score``, or ``None`` for a missing score
            or fewer than two scores.
        """
        if self._scores is None:  # read and sorted once for every card of the page
            self._scores = pd.to_numeric(self.images["anomaly_score"], errors="coerce").to_numpy(dtype=np.float64)
            self._sorted_scores = np.sort(self._scores[np.isfinite(self._scores)])
        value, n_scores = self._scores[row], len(self._sorted_scores)
        if not np.isfinite(value) or n_scores < 2:
            return None
        higher = n_scores - int(np.searchsorted(self._sorted_scores, value, side="right"))
        return (higher + 1) / n_scores

    @property
    def has_ground_truth(self) -> bool:
        """Whether any image has a known ``defect_type``."""
        if "defect_type" not in self.images.columns:
            return False
        return bool(self.images["defect_type"].map(is_known).any())

    def images_per_class(self) -> list[int]:
        """Number of images predicted in each class, indexed like :attr:`class_names`."""
        return _per_class(self.images, len(self.class_names))

    def regions_per_class(self) -> list[int]:
        """Number of regions predicted in each class, indexed like :attr:`class_names`."""
        return _per_class(self.regions, len(self.class_names))


def is_known(value: object) -> bool:
    """Whether a ground-truth cell holds a value (not ``None``, NaN or an empty string).

    Args:
        value: a ``defect_type`` cell.

    Returns:
        ``True`` when the cell names a type.

    Example:
        >>> [is_known(value) for value in ("crack", None, float("nan"), "")]
        [True, False, False, False]
    """
    if value is None or value is pd.NA:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value) != ""


def _per_class(table: pd.DataFrame, n_classes: int) -> list[int]:
    counts = np.bincount(table["pred_class"].to_numpy(dtype=np.int64), minlength=n_classes)
    return [int(count) for count in counts]


def _require_columns(table: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    if not isinstance(table, pd.DataFrame):
        msg = f"{name} must be a pandas DataFrame, got {type(table).__name__}"
        raise TypeError(msg)
    missing = [column for column in columns if column not in table.columns]
    if missing:
        msg = f"{name} table is missing columns: {', '.join(missing)}"
        raise ValueError(msg)


def _check_maps(maps: list[np.ndarray], n_images: int) -> None:
    if len(maps) != n_images:
        msg = f"len(maps) = {len(maps)} but there are {n_images} images; one anomaly map per image is needed"
        raise ValueError(msg)
    for position, anomaly_map in enumerate(maps):
        if np.ndim(anomaly_map) != 2:
            msg = f"maps[{position}] must be a 2-D array, got shape {np.shape(anomaly_map)}"
            raise ValueError(msg)


def _check_image_index(regions: pd.DataFrame, n_images: int) -> None:
    index = regions["image_index"].to_numpy()
    outside = (index < 0) | (index >= n_images)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        msg = (
            f"regions.image_index out of range: row {first} has image_index {index[first]}, "
            f"valid rows of images are 0..{n_images - 1}"
        )
        raise ValueError(msg)


def _check_classes(table: pd.DataFrame, name: str, n_classes: int) -> None:
    classes = table["pred_class"].to_numpy()
    outside = (classes < 0) | (classes >= n_classes)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        msg = f"{name}.pred_class out of range: row {first} has class {classes[first]}, but {n_classes} class names"
        raise ValueError(msg)


def _check_features(features: np.ndarray | None, n_regions: int) -> None:
    if features is None:
        return
    if np.ndim(features) != 2:
        msg = f"features must be a 2-D (regions, dims) array, got shape {np.shape(features)}"
        raise ValueError(msg)
    if len(features) != n_regions:
        msg = f"features has {len(features)} rows but there are {n_regions} regions; one row per region is needed"
        raise ValueError(msg)


def _checked_range(map_range: tuple[float, float]) -> tuple[float, float]:
    if len(map_range) != 2:
        msg = f"map_range must be (low, high), got {map_range!r}"
        raise ValueError(msg)
    low, high = float(map_range[0]), float(map_range[1])
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        msg = f"map_range must be finite with low <= high, got ({low}, {high})"
        raise ValueError(msg)
    return low, high


def _check_mebin_curve(curve: Mapping[str, Any], position: int) -> None:
    missing = [key for key in MEBIN_CURVE_KEYS if key not in curve]
    if missing:
        msg = f"mebin_curves[{position}] is missing keys: {', '.join(missing)}"
        raise ValueError(msg)
    counts, thresholds = np.ravel(curve["count_sequence"]), np.ravel(curve["thresholds"])
    if len(counts) != len(thresholds):
        msg = f"mebin_curves[{position}]: count_sequence has {len(counts)} values but thresholds has {len(thresholds)}"
        raise ValueError(msg)
    interval = curve["stable_interval"]
    if interval is not None and not 0 <= int(interval[0]) <= int(interval[1]) < len(counts):
        msg = f"mebin_curves[{position}]: stable_interval {tuple(interval)} is not a pair of indices into the sweep"
        raise ValueError(msg)


def _check_positive(value: int, name: str) -> None:
    if int(value) < 1:
        msg = f"{name} must be at least 1, got {value}"
        raise ValueError(msg)
