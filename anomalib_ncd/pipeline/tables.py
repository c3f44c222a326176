"""Result tables of a discovery: one row per image (``assignments.csv``) and one per region."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.novelty import UNKNOWN
from anomalib_ncd.maps.map_set import AnomalyMapSet

LIST_COLUMNS: tuple[str, ...] = (
    "region_boxes",
    "region_classes",
    "region_confidences",
    "region_scores",
    "region_unknown",
    "region_unknown_scores",
)
"""Columns of the assignments table that hold one JSON list per image (a value per region)."""


def assignments_table(map_set: AnomalyMapSet, found: ImageClassification, class_names: list[str]) -> pd.DataFrame:
    """One row per image: its class, confidence, detector score, regions and known type.

    Region boxes, classes and confidences are JSON lists in their cells, so the CSV stays one row
    per image and reads back with ``json.loads``. An image that fits no class has ``unknown`` set and
    ``class_name`` ``"unknown"``; its ``pred_class`` stays the nearest class. ``unknown_score`` is
    empty (``NaN``) where nothing was found.

    Args:
        map_set: the images (and their ground truth, when known).
        found: their classes.
        class_names: the display name of each class index.

    Returns:
        The table, in image order. ``defect_type`` (the ground truth) is present only when known.
    """
    region_classes, region_confidence = found.region_classes, found.region_confidence
    region_scores, region_unknown, image_scores, image_unknown = found.unknown_or_default()
    rows = []
    for index, path in enumerate(map_set.image_paths):
        members = found.rows_of_image(index)
        anomalous = [i for i in members if not found.regions[i].whole_image]
        unknown = bool(image_unknown[index])
        sources = {getattr(found.regions[i], "source", "region") for i in members}
        row = {
            "image_path": path,
            "pred_class": int(found.classes[index]),
            "class_name": UNKNOWN if unknown else class_names[int(found.classes[index])],
            "confidence": round(float(found.confidence[index]), 6),
            "path_taken": image_path_taken(sources),
            "unknown": unknown,
            "unknown_score": round(float(image_scores[index]), 6),
            "anomaly_score": float(map_set.scores[index]) if map_set.scores is not None else float("nan"),
            "n_regions": len(anomalous),
            "region_boxes": json.dumps([list(found.regions[i].box) for i in anomalous]),
            "region_classes": json.dumps([int(region_classes[i]) for i in anomalous]),
            "region_confidences": json.dumps([round(float(region_confidence[i]), 6) for i in anomalous]),
            "region_scores": json.dumps([round(float(found.regions[i].score), 6) for i in anomalous]),
            "region_unknown": json.dumps([bool(region_unknown[i]) for i in anomalous]),
            "region_unknown_scores": json.dumps([round(float(region_scores[i]), 6) for i in anomalous]),
        }
        if map_set.defect_types is not None:
            row["defect_type"] = map_set.defect_types[index]
        rows.append(row)
    return pd.DataFrame(rows)


def image_path_taken(sources: set[str]) -> str:
    """Which path an image took through the region stage, from its regions' sources.

    Args:
        sources: the :attr:`~anomalib_ncd.regions.crops.Region.source` of its regions.

    Returns:
        ``region`` (classified from binarised regions), ``soft`` (MEBin found nothing; classified
        from the soft-path region) or ``none`` (nothing found: normal by the detector's verdict).
    """
    for path in ("region", "soft"):
        if path in sources:
            return path
    return "none"


def region_table(map_set: AnomalyMapSet, found: ImageClassification, class_names: list[str]) -> pd.DataFrame:
    """One row per region (whole-image regions included): image, box, class, confidence, score.

    A region that fits no class has ``unknown`` set and ``class_name`` ``"unknown"``; its
    ``pred_class`` stays the nearest class. Whole-image regions have no ``unknown_score`` (``NaN``).

    Args:
        map_set: the images.
        found: their classes.
        class_names: the display name of each class index.

    Returns:
        The table, in region order.
    """
    classes, confidence = found.region_classes, found.region_confidence
    scores, unknown, _, _ = found.unknown_or_default()
    rows = [
        {
            "region": number,
            "image_index": region.image_index,
            "image_path": map_set.image_paths[region.image_index],
            "x0": region.box[0],
            "y0": region.box[1],
            "x1": region.box[2],
            "y1": region.box[3],
            "area": region.area,
            "score": round(float(region.score), 6),
            "whole_image": bool(region.whole_image),
            "source": getattr(region, "source", "region"),
            "anomalous_probability": round(float(getattr(region, "anomalous_probability", float("nan"))), 6),
            "pred_class": int(classes[number]),
            "class_name": UNKNOWN if unknown[number] else class_names[int(classes[number])],
            "confidence": round(float(confidence[number]), 6),
            "unknown": bool(unknown[number]),
            "unknown_score": round(float(scores[number]), 6),
        }
        for number, region in enumerate(found.regions)
    ]
    return pd.DataFrame(rows)


def decode_list_column(table: pd.DataFrame, column: str) -> list[list]:
    """Read back a JSON-list column of :func:`assignments_table` (e.g. after ``pd.read_csv``).

    Args:
        table: the assignments table.
        column: ``region_boxes``, ``region_classes``, ``region_confidences``, ``region_scores``,
            ``region_unknown`` or ``region_unknown_scores``.

    Returns:
        One list per row.

    Example:
        >>> decode_list_column(pd.DataFrame({"region_classes": ["[1, 2]", "[]"]}), "region_classes")
        [[1, 2], []]
    """
    return [json.loads(cell) if isinstance(cell, str) else [] for cell in table[column]]


def confidence_summary(values: np.ndarray) -> dict[str, float]:
    """Mean and quartiles of confidences, for run summaries.

    Args:
        values: confidences.

    Returns:
        ``{"mean", "q25", "median", "q75"}``.
    """
    if len(values) == 0:
        return {"mean": float("nan"), "q25": float("nan"), "median": float("nan"), "q75": float("nan")}
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"mean": float(np.mean(values)), "q25": float(q25), "median": float(median), "q75": float(q75)}
