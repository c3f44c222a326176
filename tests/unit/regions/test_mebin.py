"""Tests of MEBin against a plain per-threshold implementation of the published semantics."""

import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomalib_ncd.regions.mebin import MEBin, MEBinResult, _greater, select_stable_interval

# ----------------------------------------------------------------------------------------------
# Straightforward reference: one binarisation, erosion and labelling per threshold, as the
# AnomalyNCD code does it. Kept deliberately naive; the fast implementation must match it exactly.
# ----------------------------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    threshold: float
    count: int
    sequence: list[int]
    mask: np.ndarray


def reference_interval(sequence: list[int], min_len: int) -> tuple[int, int] | None:
    runs: dict[int, list[tuple[int, int]]] = {}
    index = 0
    while index < len(sequence):
        end = index
        if sequence[index] != 0:
            while end < len(sequence) - 1 and sequence[end] == sequence[end + 1]:
                end += 1
            if end - index + 1 >= min_len:
                runs.setdefault(sequence[index], []).append((index, end))
        index = end + 1
    if not runs:
        return None
    longest = {count: max(e - s for s, e in spans) for count, spans in runs.items()}
    count = max(longest, key=longest.get)
    return sorted(runs[count], key=lambda span: span[1] - span[0])[-1]


def reference_mebin(
    maps: list[np.ndarray],
    min_th: float,
    max_th: float,
    *,
    step: int = 4,
    min_len: int = 4,
    erode: bool = True,
    kernel_size: int = 6,
    connectivity: int = 8,
    truncate: bool | None = None,
) -> list[ReferenceResult]:
    kernel = np.ones((kernel_size, kernel_size), np.uint8)

    def bin_and_erode(values: np.ndarray, threshold: float) -> np.ndarray:
        binary = np.where(values > threshold, 255, 0).astype(np.uint8)
        return cv2.erode(binary, kernel) if erode else binary

    results = []
    for anomaly_map in maps:
        values = anomaly_map.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(values < min_th, 0, (values - min_th) / (max_th - min_th) * 255)
        sequence = []
        for t in range(255, 0, -step):
            binary = bin_and_erode(norm, t)
            sequence.append(cv2.connectedComponents(binary, connectivity=connectivity)[0] - 1)
        span = reference_interval(sequence, min_len)
        if span is None:
            results.append(ReferenceResult(max_th, 0, sequence, np.zeros(anomaly_map.shape, bool)))
            continue
        threshold = (255 - span[1] * step) * (max_th - min_th) / 255 + min_th
        if truncate or (truncate is None and np.issubdtype(anomaly_map.dtype, np.integer)):
            threshold = int(threshold)
        mask = bin_and_erode(values, threshold) > 0
        results.append(ReferenceResult(float(threshold), sequence[span[0]], sequence, mask))
    return results


def assert_same(ours: list[MEBinResult], reference: list[ReferenceResult]) -> None:
    assert len(ours) == len(reference)
    for index, (result, expected) in enumerate(zip(ours, reference, strict=True)):
        assert result.count_sequence.tolist() == expected.sequence, f"count sequence of map {index}"
        assert result.anomaly_count == expected.count, f"count of map {index}"
        assert result.threshold == expected.threshold, f"threshold of map {index}"
        assert result.mask.dtype == bool
        assert np.array_equal(result.mask, expected.mask), f"mask of map {index}"


# ----------------------------------------------------------------------------------------------
# Map generators
# ----------------------------------------------------------------------------------------------


def gaussian_blobs(shape: tuple[int, int], centres: list[tuple[float, float, float, float]]) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = np.zeros(shape, np.float64)
    for cy, cx, sigma, height in centres:
        out += height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int = 8) -> np.ndarray:
    coarse = rng.normal(size=(max(2, shape[0] // scale + 2), max(2, shape[1] // scale + 2))).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).astype(np.float64)


def blob_set(seed: int = 0, n_maps: int = 8, shape: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = []
    for index in range(n_maps):
        anomaly_map = 0.2 + 0.03 * smooth_noise(rng, shape)
        if index % 3:  # every third map is normal
            centres = [
                (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(3, 10), rng.uniform(0.3, 0.8))
                for _ in range(index % 4 + 1)
            ]
            anomaly_map += gaussian_blobs(shape, centres)
        maps.append(anomaly_map.astype(np.float32))
    return maps


# ----------------------------------------------------------------------------------------------
# Exactness on structured maps
# ----------------------------------------------------------------------------------------------


def test_blob_set_matches_reference() -> None:
    maps = blob_set()
    mebin = MEBin(n_jobs=1).fit(maps)
    peaks = [float(m.max()) for m in maps]
    assert (mebin.min_th_, mebin.max_th_) == (min(peaks), max(peaks))
    ours = mebin.transform(maps)
    assert_same(ours, reference_mebin(maps, min(peaks), max(peaks)))
    assert all(len(result.count_sequence) == 64 for result in ours)
    assert any(result.anomaly_count > 0 for result in ours)


def test_separated_defects_are_counted() -> None:
    shape = (120, 160)
    normal = 0.1 * np.ones(shape)
    normal[60, 80] = 0.3  # the normal image's peak sets min_th
    three = normal + gaussian_blobs(shape, [(20, 20, 5, 1.0), (90, 40, 6, 0.9), (60, 130, 5, 0.95)])
    maps = [normal, three]
    ours = MEBin(n_jobs=1).fit_transform(maps)
    assert ours[1].anomaly_count == 3
    assert ours[0].anomaly_count == 0
    assert not ours[0].mask.any()
    n_regions = cv2.connectedComponents(ours[1].mask.astype(np.uint8), connectivity=8)[0] - 1
    assert n_regions == 3
    assert_same(ours, reference_mebin(maps, 0.3, float(three.max())))


def test_uint8_maps_truncate_threshold_like_reference() -> None:
    maps = [np.clip(m * 255, 0, 255).astype(np.uint8) for m in blob_set(seed=3)]
    peaks = [float(m.max()) for m in maps]
    ours = MEBin(n_jobs=1).fit_transform(maps)
    assert_same(ours, reference_mebin(maps, min(peaks), max(peaks)))
    assert all(result.threshold == int(result.threshold) for result in ours)
    assert any(result.stable_interval is not None for result in ours)


def test_float_threshold_is_not_truncated_for_float_maps() -> None:
    maps = blob_set(seed=4)
    ours = MEBin(n_jobs=1).fit_transform(maps)
    found = [result for result in ours if result.stable_interval is not None]
    assert found
    assert any(result.threshold != int(result.threshold) for result in found)
    truncated = MEBin(n_jobs=1, integer_threshold=True).fit_transform(maps)
    assert all(r.threshold == int(r.threshold) for r in truncated if r.stable_interval is not None)


def test_values_exactly_on_thresholds_use_strict_comparison() -> None:
    # With min_th = 0 and max_th = 255 the normalised value equals the map value, so plateaus sit
    # exactly on thresholds (must stay background) or one ulp above them (must be foreground).
    base = np.zeros((40, 60))
    base[0, 0] = 255.0
    on = base.copy()
    on[10:30, 10:25] = 131.0  # 131 = 255 - 31 * 4 is a threshold
    above = base.copy()
    above[10:30, 30:50] = np.nextafter(131.0, 200.0)
    maps = [base, on, above, np.zeros((40, 60))]
    mebin = MEBin(n_jobs=1, lower_bound=0.0).fit(maps)
    assert (mebin.min_th_, mebin.max_th_) == (0.0, 255.0)
    ours = mebin.transform(maps)
    assert_same(ours, reference_mebin(maps, 0.0, 255.0))
    index = 31  # threshold 131
    assert ours[1].count_sequence[index] == 0
    assert ours[2].count_sequence[index] == 1
    assert ours[1].count_sequence[index + 1] == 1


def test_even_kernel_anchor_and_border() -> None:
    # OpenCV anchors a 6x6 kernel at (3, 3): the window of pixel y spans y-3 .. y+2, and the
    # image border never erodes. A 10x10 block in the corner therefore keeps rows/cols 0..7.
    anomaly_map = np.zeros((20, 20))
    anomaly_map[:10, :10] = 1.0
    normal = np.zeros((20, 20))
    normal[15, 15] = 0.01
    ours = MEBin(n_jobs=1, min_interval_len=1).fit_transform([anomaly_map, normal])
    expected = np.zeros((20, 20), bool)
    expected[:8, :8] = True
    assert np.array_equal(ours[0].mask, expected)
    assert_same(ours, reference_mebin([anomaly_map, normal], 0.01, 1.0, min_len=1))


def test_block_touching_every_border() -> None:
    anomaly_map = np.ones((7, 9))
    anomaly_map[3, 4] = 2.0
    other = np.zeros((7, 9))
    other[0, 0] = 0.5
    maps = [anomaly_map, other]
    ours = MEBin(n_jobs=1, min_interval_len=1).fit_transform(maps)
    assert_same(ours, reference_mebin(maps, 0.5, 2.0, min_len=1))


def test_normal_only_set_matches_reference() -> None:
    rng = np.random.default_rng(7)
    maps = [(0.2 + 0.05 * smooth_noise(rng, (64, 64), scale=4)).astype(np.float32) for _ in range(6)]
    peaks = [float(m.max()) for m in maps]
    assert_same(MEBin(n_jobs=1).fit_transform(maps), reference_mebin(maps, min(peaks), max(peaks)))


def test_constant_map_in_set() -> None:
    maps = [*blob_set(n_maps=4), np.full((50, 50), 0.25, np.float32)]
    peaks = [float(m.max()) for m in maps]
    ours = MEBin(n_jobs=1).fit_transform(maps)
    assert_same(ours, reference_mebin(maps, min(peaks), max(peaks)))


def test_all_constant_set_is_empty_with_warning() -> None:
    maps = [np.full((16, 16), 0.5), np.full((8, 12), 0.5)]
    with pytest.warns(RuntimeWarning, match="empty"):
        ours = MEBin(n_jobs=1).fit_transform(maps)
    for result in ours:
        assert result.anomaly_count == 0
        assert not result.mask.any()
        assert result.threshold == 0.5
        assert result.normalized_threshold == 255
        assert not result.count_sequence.any()


def test_single_map_set_falls_back_to_global_minimum() -> None:
    anomaly_map = blob_set(n_maps=2)[1]
    with pytest.warns(RuntimeWarning, match="collapsed"):
        mebin = MEBin(n_jobs=1).fit([anomaly_map])
    assert mebin.min_th_ == float(anomaly_map.min())
    assert mebin.range_note_ is not None
    ours = mebin.transform([anomaly_map])
    assert ours[0].anomaly_count > 0
    assert_same(ours, reference_mebin([anomaly_map], mebin.min_th_, mebin.max_th_))


def test_set_without_normal_images() -> None:
    # Issue #8 of AnomalyNCD: with min_peak the weakest defect image can never be binarised.
    shape = (64, 64)
    maps = [0.1 + gaussian_blobs(shape, [(32, 32, 5, height)]) for height in (0.5, 0.8, 1.0)]
    weakest = MEBin(n_jobs=1).fit_transform(maps)[0]
    assert weakest.anomaly_count == 0
    assert not weakest.mask.any()
    mebin = MEBin(n_jobs=1, lower_bound="global_min").fit(maps)
    assert mebin.min_th_ == pytest.approx(0.1)
    ours = mebin.transform(maps)
    assert [result.anomaly_count for result in ours] == [1, 1, 1]
    assert_same(ours, reference_mebin(maps, mebin.min_th_, mebin.max_th_))
    fixed = MEBin(n_jobs=1, lower_bound=0.0).fit(maps)
    assert fixed.min_th_ == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_with_index(bad: float) -> None:
    maps = blob_set(n_maps=3)
    maps[2] = maps[2].copy()
    maps[2][5, 5] = bad
    with pytest.raises(ValueError, match="anomaly map 2 contains NaN or infinite"):
        MEBin(n_jobs=1).fit(maps)
    mebin = MEBin(n_jobs=1).fit(maps[:2])
    with pytest.raises(ValueError, match="anomaly map 2"):
        mebin.transform(maps)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MEBin().fit([])
    with pytest.raises(ValueError, match="2-D"):
        MEBin().fit([np.zeros((3, 4, 5))])
    with pytest.raises(ValueError, match="non-empty"):
        MEBin().fit([np.zeros((0, 4))])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        MEBin().fit(np.zeros((4, 4)))
    with pytest.raises(RuntimeError, match="no search range"):
        MEBin().transform([np.zeros((4, 4))])
    with pytest.raises(ValueError, match="connectivity"):
        MEBin(connectivity=6)
    with pytest.raises(ValueError, match="step"):
        MEBin(step=0)
    with pytest.raises(ValueError, match="lower_bound"):
        MEBin(lower_bound="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_th <= max_th"):
        MEBin().set_range(1.0, 0.0)
    assert MEBin().set_range(0.0, 1.0).transform([]) == []


def test_fit_partial_fit_set_range_agree() -> None:
    maps = blob_set(seed=5, n_maps=9)
    fitted = MEBin(n_jobs=1).fit(maps)
    partial = MEBin(n_jobs=1)
    for start in range(0, 9, 4):
        partial.partial_fit(maps[start : start + 4])
    manual = MEBin(n_jobs=1).set_range(fitted.min_th_, fitted.max_th_)
    assert (partial.min_th_, partial.max_th_, partial.n_maps_seen_) == (fitted.min_th_, fitted.max_th_, 9)
    expected = fitted.transform(maps)
    for other in (partial, manual):
        for a, b in zip(other.transform(maps), expected, strict=True):
            assert np.array_equal(a.mask, b.mask)
            assert a.threshold == b.threshold


def test_array_input_threads_and_output_sizes() -> None:
    maps = np.stack(blob_set(seed=6, n_maps=6))
    serial = MEBin(n_jobs=1).fit_transform(maps)
    threaded = MEBin(n_jobs=2).fit_transform(list(maps))
    for a, b in zip(serial, threaded, strict=True):
        assert np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.count_sequence, b.count_sequence)
    resized = MEBin(n_jobs=2).fit(maps).transform(maps, output_sizes=(192, 256))
    for small, large in zip(serial, resized, strict=True):
        assert large.mask.shape == (192, 256)
        assert np.array_equal(large.mask, cv2.resize(small.mask.astype(np.uint8), (256, 192), cv2.INTER_NEAREST) > 0)
    sizes = [None, (10, 20), None, None, (96, 128), None]
    per_map = MEBin(n_jobs=1).fit(maps).transform(maps, output_sizes=sizes)
    assert [result.mask.shape for result in per_map][:2] == [(96, 128), (10, 20)]
    with pytest.raises(ValueError, match="output sizes"):
        MEBin(n_jobs=1).fit(maps).transform(maps, output_sizes=[(1, 1)])


# ----------------------------------------------------------------------------------------------
# Stable-interval selection
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequence", "min_len", "expected"),
    [
        ([0] * 64, 4, None),
        ([1, 1, 1, 0, 2, 2, 2], 4, None),
        ([0, 2, 2, 2, 2, 1, 1, 1, 1, 1], 4, (5, 9)),
        # tie between counts: the count whose first stable interval comes first wins
        ([3, 3, 3, 3, 1, 1, 1, 1], 4, (0, 3)),
        # count 2 appears first with a short run, then count 1 ties with count 2's long run
        ([2, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2], 4, (9, 13)),
        # tie within one count: the later (lower-threshold) run wins
        ([1, 1, 1, 1, 0, 1, 1, 1, 1, 0], 4, (5, 8)),
        ([5, 5, 5, 5], 4, (0, 3)),
        ([0, 0, 7], 1, (2, 2)),
    ],
)
def test_select_stable_interval(sequence: list[int], min_len: int, expected: tuple[int, int] | None) -> None:
    assert select_stable_interval(sequence, min_len) == expected
    assert reference_interval(sequence, min_len) == expected


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 5))
def test_select_stable_interval_matches_reference(sequence: list[int], min_len: int) -> None:
    assert select_stable_interval(sequence, min_len) == reference_interval(sequence, min_len)


# ----------------------------------------------------------------------------------------------
# Random maps
# ----------------------------------------------------------------------------------------------

shapes = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.sampled_from([(17, 300), (300, 17), (1, 64), (64, 1), (6, 6), (5, 7)]),
)


@st.composite
def map_sets(draw: st.DrawFn) -> list[np.ndarray]:
    n_maps = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n_maps):
        shape = draw(shapes)
        kind = draw(st.sampled_from(["smooth", "noisy", "blobs", "plateaus"]))
        if kind == "smooth":
            anomaly_map = smooth_noise(rng, shape, scale=draw(st.integers(2, 10)))
        elif kind == "noisy":
            anomaly_map = rng.random(shape)
        elif kind == "blobs":
            centres = [
                (rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1, 8), rng.uniform(0.2, 1))
                for _ in range(int(rng.integers(1, 5)))
            ]
            anomaly_map = gaussian_blobs(shape, centres) + 0.05 * rng.random(shape)
        else:  # few distinct values: flat zones, values on thresholds, ties
            anomaly_map = rng.integers(0, 6, size=shape) / 5.0
        dtype = draw(st.sampled_from([np.float32, np.float64]))
        maps.append(anomaly_map.astype(dtype))
    return maps


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    maps=map_sets(),
    step=st.sampled_from([4, 4, 3, 7, 1]),
    min_len=st.integers(1, 6),
    kernel_size=st.sampled_from([6, 6, 1, 2, 3]),
    connectivity=st.sampled_from([8, 4]),
    erode=st.booleans(),
)
def test_random_maps_match_reference(
    maps: list[np.ndarray],
    step: int,
    min_len: int,
    kernel_size: int,
    connectivity: int,
    erode: bool,
) -> None:
    mebin = MEBin(
        step=step,
        min_interval_len=min_len,
        kernel_size=kernel_size,
        connectivity=connectivity,
        erode=erode,
        n_jobs=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mebin.fit(maps)
        ours = mebin.transform(maps)
    peaks = [float(m.max()) for m in maps]
    if max(peaks) > min(peaks):
        assert (mebin.min_th_, mebin.max_th_) == (min(peaks), max(peaks))
    if mebin.max_th_ > mebin.min_th_:
        expected = reference_mebin(
            maps,
            mebin.min_th_,
            mebin.max_th_,
            step=step,
            min_len=min_len,
            erode=erode,
            kernel_size=kernel_size,
            connectivity=connectivity,
        )
        assert_same(ours, expected)
    else:
        assert all(not result.mask.any() and result.anomaly_count == 0 for result in ours)
    assert all(len(result.count_sequence) == len(range(255, 0, -step)) for result in ours)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(maps=map_sets())
def test_random_uint8_maps_match_reference(maps: list[np.ndarray]) -> None:
    maps = [np.round(m / max(float(np.abs(m).max()), 1e-9) * 255).clip(0, 255).astype(np.uint8) for m in maps]
    mebin = MEBin(n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = mebin.fit_transform(maps)
    if mebin.max_th_ > mebin.min_th_:
        assert_same(ours, reference_mebin(maps, mebin.min_th_, mebin.max_th_))


@settings(max_examples=100, derandomize=True, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=30),
    threshold=st.floats(-1e6, 1e6),
)
def test_float32_comparison_is_decided_in_float64(values: list[float], threshold: float) -> None:
    # The final mask compares a float32 map with a float64 threshold without converting the map.
    anomaly_map = np.array(values, np.float32).reshape(1, -1)
    probes = np.concatenate([anomaly_map, np.float32([[np.float32(threshold)]])], axis=1)
    mebin = MEBin(n_jobs=1, kernel_size=1, min_interval_len=1).set_range(threshold - 1.0, threshold)
    assert np.array_equal(_greater(probes, threshold), probes.astype(np.float64) > threshold)
    assert mebin.transform([anomaly_map])[0].mask.shape == anomaly_map.shape
