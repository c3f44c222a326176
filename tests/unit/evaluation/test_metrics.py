"""metrics.json from the result tables."""

import pandas as pd
import pytest

from anomalib_ncd.evaluation.metrics import discovery_metrics, discovery_reports


def test_image_and_region_levels():
    assignments = pd.DataFrame(
        {
            "class_name": ["normal", "novel_1", "novel_1", "novel_2"],
            "defect_type": ["good", "crack", "crack", "hole"],
        }
    )
    regions = pd.DataFrame(
        {"image_index": [0, 1, 1, 2, 3], "class_name": ["normal", "novel_1", "novel_2", "novel_1", "novel_2"]}
    )
    reports = discovery_reports(assignments, regions)
    assert reports["image"].f1 == 1.0
    assert reports["image"].nmi == pytest.approx(1.0)
    assert reports["region"].n_samples == 5
    assert reports["region"].f1 == pytest.approx(4 / 5)
    metrics = discovery_metrics(assignments, regions)
    assert metrics["image"]["confusion"]["index"] == ["crack", "good", "hole"]
    assert metrics["region"]["f1"] == pytest.approx(0.8)


def test_missing_truth_is_an_error():
    with pytest.raises(ValueError, match="no ground-truth"):
        discovery_metrics(pd.DataFrame({"class_name": ["normal"]}))
    with pytest.raises(ValueError, match="no ground-truth"):
        discovery_metrics(pd.DataFrame({"class_name": ["normal"], "defect_type": [None]}))


def test_unknown_rows_are_scored_by_their_nearest_class():
    assignments = pd.DataFrame(
        {
            "pred_class": [0, 1, 1, 2],
            "class_name": ["normal", "novel_1", "unknown", "unknown"],
            "unknown": [False, False, True, True],
            "defect_type": ["good", "crack", "crack", "hole"],
        }
    )
    report = discovery_reports(assignments)["image"]
    assert report.f1 == 1.0
    assert set(report.mapping) == {"normal", "novel_1", "class_2"}  # no "unknown" cluster
