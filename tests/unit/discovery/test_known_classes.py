import cv2
import numpy as np
import pytest

from anomalib_ncd.data.samples import make_sample_table
from anomalib_ncd.discovery.known_classes import known_class_regions


def _table(tmp_path, rows):
    records = []
    for number, (defect_type, box) in enumerate(rows):
        path = tmp_path / f"{number}.png"
        cv2.imwrite(str(path), np.full((40, 60, 3), 100, np.uint8))
        records.append(
            {
                "image_path": str(path),
                "defect_type": defect_type,
                "is_normal": defect_type == "good",
                "mask_path": None,
                "boxes": [box] if box else None,
                "split": "test",
            }
        )
    return make_sample_table(records)


def test_each_annotated_defect_becomes_a_labeled_region(tmp_path):
    table = _table(
        tmp_path,
        [("scratch", (5, 5, 15, 15)), ("good", None), ("patch", (30, 10, 50, 30)), ("scratch", (40, 20, 55, 35))],
    )
    regions, classes, names = known_class_regions(table)
    assert names == ["patch", "scratch"]
    assert classes == [1, 0, 1]
    assert all(region.crop is not None and region.mask.any() for region in regions)


def test_a_set_without_annotated_defects_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no defect image"):
        known_class_regions(_table(tmp_path, [("good", None)]))
    with pytest.raises(ValueError, match="mask or boxes"):
        known_class_regions(_table(tmp_path, [("scratch", None)]))
