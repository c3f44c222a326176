"""A labeled set of known defect classes (e.g. NEU-DET, or types a user already labeled), as regions."""

from __future__ import annotations

import pandas as pd

from anomalib_ncd.data.masks import is_annotated
from anomalib_ncd.regions.crops import CropSettings, Region
from anomalib_ncd.regions.extract import ground_truth_regions


def known_class_regions(
    samples: pd.DataFrame,
    crop_settings: CropSettings | None = None,
) -> tuple[list[Region], list[int], list[str]]:
    """Regions around the annotated defects of a labeled set, with their class indices.

    Each annotated defect (mask component or box) becomes a region labeled with its image's
    ``defect_type``; normal images and defect images without annotation are skipped (a known class
    is a kind of defect). Class indices follow the sorted type names, so they are stable.

    Args:
        samples: a sample table of the labeled set (``defect_type`` and masks or boxes).
        crop_settings: crop parameters (use the ones of the unlabeled regions).

    Returns:
        ``(regions, classes, class_names)`` for :meth:`AnomalyNCD.prepare`'s ``labeled_regions`` and
        ``labeled_classes``; ``n_known_classes`` is ``len(class_names)``.

    Raises:
        ValueError: when no image of the set has an annotated defect.
    """
    defects = samples[~samples["is_normal"].astype(bool)].reset_index(drop=True)
    if defects.empty:
        msg = "the labeled set has no defect image: known classes need annotated defects"
        raise ValueError(msg)
    defects = defects[[is_annotated(row) for _, row in defects.iterrows()]].reset_index(drop=True)
    regions = [] if defects.empty else [r for r in ground_truth_regions(defects, crop_settings) if not r.whole_image]
    if not regions:
        msg = "no image of the labeled set has a mask or boxes: known classes need annotated defects"
        raise ValueError(msg)
    types = [str(defects["defect_type"].iloc[region.image_index]) for region in regions]
    class_names = sorted(set(types))
    index = {name: number for number, name in enumerate(class_names)}
    return regions, [index[name] for name in types], class_names
