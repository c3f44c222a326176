"""A small discovery run on real image files for the report tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.report import ReportData

CLASS_NAMES = ["normal", "novel 1", "novel 2"]  # "novel 2" gets no image


def write_png(path: Path, shape: tuple[int, ...], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def mebin_curve(name: str) -> dict:
    thresholds = np.arange(255, 0, -4)
    counts = np.zeros(len(thresholds), dtype=np.int64)
    counts[5:12] = 1
    counts[12:40] = 3
    counts[40:] = 9
    return {
        "image": name,
        "count_sequence": counts,
        "thresholds": thresholds,
        "stable_interval": (12, 39),
        "chosen_threshold": int(thresholds[39]),
    }


def build_report_data(folder: Path, **overrides: object) -> ReportData:
    """Four images (grey, colour, a 40x300 strip, colour with an awkward name), seven regions."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        write_png(folder / "grey.png", (60, 80), seed=1),
        write_png(folder / "colour.png", (90, 120, 3), seed=2),
        write_png(folder / "strip.png", (40, 300, 3), seed=3),
        write_png(folder / "a&b <odd>.png", (64, 64, 3), seed=4),
    ]
    images = pd.DataFrame(
        {
            "image_path": [str(path) for path in paths],
            "pred_class": [0, 1, 1, 0],
            "class_name": [CLASS_NAMES[c] for c in (0, 1, 1, 0)],
            "confidence": [0.9, 0.8, 0.95, 0.7],
            "anomaly_score": [0.1, 0.7, float("nan"), 0.4],
            "n_regions": [1, 3, 1, 2],
            "defect_type": ["good", "crack", "crack", "hole"],
        }
    )
    boxes = [  # image_index, x0, y0, x1, y1, pred_class, whole_image
        (0, 0, 0, 80, 60, 0, True),
        (1, 10, 10, 40, 30, 1, False),
        (1, 50, 40, 110, 85, 1, False),
        (1, 0, 0, 5, 5, 0, False),
        (2, 200, 5, 280, 35, 1, False),
        (3, 0, 0, 64, 64, 0, True),
        (3, 20, 20, 30, 40, 0, False),
    ]
    regions = pd.DataFrame(boxes, columns=["image_index", "x0", "y0", "x1", "y1", "pred_class", "whole_image"])
    regions.insert(0, "region", range(len(regions)))
    regions["confidence"] = np.linspace(0.5, 0.9, len(regions))
    regions["score"] = np.linspace(0.2, 0.8, len(regions))
    rng = np.random.default_rng(0)
    maps = [rng.random(shape).astype(np.float32) for shape in [(60, 80), (45, 60), (8, 64), (256, 256)]]
    report = clustering_report(images["defect_type"].tolist(), images["pred_class"].tolist())
    fields: dict[str, object] = {
        "title": "synthetic / brick - v3",
        "images": images,
        "regions": regions,
        "maps": maps,
        "map_range": (0.0, 1.0),
        "class_names": CLASS_NAMES,
        "features": rng.normal(size=(len(regions), 64)).astype(np.float32),
        "metrics": {"image": report.as_dict(), "region": report.as_dict()},
        "confusion": report.confusion,
        "mebin_curves": [mebin_curve("colour.png"), mebin_curve("strip.png")],
        "settings": {"model": {"name": "ProtoAnomalyNCD", "epochs": 3}, "data": {"root": "/tmp/<root>"}},
        "class_count": {"n_classes": 3, "candidates": [2, 3, 4], "scores": [0.2, 0.4, 0.3], "criterion": "silhouette"},
    }
    fields.update(overrides)
    return ReportData(**fields)


@pytest.fixture
def make_report_data(tmp_path: Path) -> Callable[..., ReportData]:
    """Build the test run with some fields replaced (``make_report_data(metrics=None)``)."""
    return lambda **overrides: build_report_data(tmp_path / "images", **overrides)


@pytest.fixture
def report_data(make_report_data: Callable[..., ReportData]) -> ReportData:
    return make_report_data()
