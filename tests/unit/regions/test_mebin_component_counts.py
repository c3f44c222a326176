"""Tests of the all-levels connected-component counter behind MEBin."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomalib_ncd.regions.component_counts import component_counts


def counts_by_labelling(levels: np.ndarray, n_levels: int, connectivity: int) -> list[int]:
    return [
        cv2.connectedComponents((levels > j).astype(np.uint8), connectivity=connectivity)[0] - 1
        for j in range(n_levels)
    ]


@settings(max_examples=80, derandomize=True, deadline=None)
@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    n_levels=st.integers(1, 64),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    connectivity=st.sampled_from([4, 8]),
)
def test_counts_match_per_level_labelling(
    height: int, width: int, n_levels: int, density: float, seed: int, connectivity: int
) -> None:
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, n_levels + 1, size=(height, width)).astype(np.uint8)
    levels[rng.random((height, width)) > density] = 0
    expected = counts_by_labelling(levels, n_levels, connectivity)
    assert component_counts(levels, n_levels, connectivity).tolist() == expected


def test_nested_regions() -> None:
    levels = np.zeros((20, 20), np.uint8)
    levels[2:18, 2:18] = 1
    levels[4:8, 4:8] = 3
    levels[12:16, 12:16] = 2
    levels[13, 13] = 4
    assert component_counts(levels, 5).tolist() == [1, 2, 2, 1, 0]
    assert component_counts(levels, 5).tolist() == counts_by_labelling(levels, 5, 8)


def test_diagonal_touch_depends_on_connectivity() -> None:
    levels = np.zeros((4, 4), np.uint8)
    levels[1, 1] = levels[2, 2] = 1
    assert component_counts(levels, 1, connectivity=8).tolist() == [1]
    assert component_counts(levels, 1, connectivity=4).tolist() == [2]


def test_empty_and_invalid() -> None:
    assert component_counts(np.zeros((5, 5), np.uint8), 3).tolist() == [0, 0, 0]
    assert component_counts(np.zeros((0, 5), np.uint8), 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="uint8"):
        component_counts(np.zeros((5, 5)), 3)
    with pytest.raises(ValueError, match="exceed"):
        component_counts(np.full((2, 2), 9, np.uint8), 3)
    with pytest.raises(ValueError, match="connectivity"):
        component_counts(np.zeros((2, 2), np.uint8), 3, connectivity=6)
