# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""MEBin (Main Element Binarization) as an exact, fast, set-level estimator.

MEBin (AnomalyNCD, CVPR 2025) binarises every anomaly map of a set with its own
threshold. The threshold is searched inside a range shared by the whole set:

1. ``max_th`` is the largest per-image peak score of the set and ``min_th`` the
   smallest one (so the set must contain normal images, see ``lower_bound``).
2. Each map is normalised to ``0 .. 255``: ``0`` where ``a < min_th``, otherwise
   ``(a - min_th) / (max_th - min_th) * 255``, computed in ``float64``.
3. For each threshold ``t`` of ``range(255, 0, -step)`` (64 values by default) the
   normalised map is binarised with ``> t``, eroded once with a ``kernel_size``
   square of ones (OpenCV semantics: default anchor at ``kernel_size // 2``, the
   image border does not erode) and its 8-connected components are counted.
4. A stable interval is a run of at least ``min_interval_len`` consecutive
   thresholds with the same non-zero count. Each count keeps its longest run (on a
   tie in length, the later run, i.e. at lower thresholds); the chosen count is
   the one whose longest run is longest (on a tie, the count whose first stable
   interval came first in the sweep from high to low thresholds).
5. The threshold is the low end of the chosen run, ``t = 255 - end * step``, mapped
   back to map units: ``t * (max_th - min_th) / 255 + min_th``. Like the reference,
   which reads anomaly maps as ``uint8`` images, it is truncated with ``int()``
   for integer maps (see ``integer_threshold``).
6. The final mask binarises the *original* map with ``> threshold`` and erodes it
   once more with the same kernel. Without any stable interval the count is 0,
   the mask empty and the threshold ``max_th`` (normalised 255; the reference
   returns the raw value 255, which for its ``uint8`` maps gives the same empty
   mask).

The reference evaluates step 3 with one binarisation, erosion and labelling per
threshold. Here it is exact but much cheaper:

* each pixel is quantised once to its *level*, the number of thresholds its
  normalised value exceeds (``norm > t`` is decided exactly, through
  ``ceil(norm) > t`` for integer ``t``), so ``norm > t_j`` iff ``level > j``;
* erosion by a flat kernel commutes with thresholding, so one grey-level
  ``cv2.erode`` of the level image replaces the 64 binary erosions;
* the component counts of all level sets come from
  :func:`~anomalib_ncd.regions.component_counts.component_counts`;
* only the bounding box of the pixels above ``min_th`` is normalised, and the final
  float32 comparison is decided exactly as in float64 without converting the map.

``n_jobs > 1`` spreads maps over threads. On 2 cores it measured no gain (the per-map
work is a few hundred microseconds of short calls, partly under the GIL, and OpenCV
already parallelises larger labellings internally), hence the default of 1.

Two details of the reference that are deliberately not reproduced: it appends a
sentinel ``1`` to its stored count sequence after choosing the threshold (ours has
exactly one entry per threshold), and under NumPy >= 2 its ``int * uint8`` range
arithmetic would wrap around (it was written for NumPy 1.24, where it is exact; the
formula is evaluated here in float64).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = rng.random((3, 64, 64)) * 0.1
    >>> maps[1, 10:30, 10:30] += 1.0
    >>> results = MEBin(n_jobs=1).fit_transform(maps)
    >>> results[1].anomaly_count
    1
"""

import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from anomalib_ncd.regions.component_counts import component_counts

LowerBound = Literal["min_peak", "global_min"] | float
"""How ``min_th`` is chosen: the reference's smallest peak, the set minimum, or a fixed value."""

AnomalyMaps = Sequence[np.ndarray] | np.ndarray
"""A sequence of 2-D arrays (sizes may differ) or one ``(N, H, W)`` array."""

_NORMALISED_MAX = 255


@dataclass(frozen=True)
class MEBinResult:
    """MEBin result for one anomaly map.

    Attributes:
        mask: Boolean anomaly mask, at the map's size or at the requested output size.
        threshold: Threshold in the units of the anomaly map (``mask`` is
            ``erode(map > threshold)`` before any resize).
        normalized_threshold: The chosen threshold on the ``0 .. 255`` normalised scale
            (``255`` when no stable interval exists).
        anomaly_count: Estimated number of anomalous regions (``0`` when no stable
            interval exists).
        count_sequence: Number of components at each threshold, ordered from the
            highest threshold (255) to the lowest, as in the reference.
        stable_interval: ``(start, end)`` indices into ``count_sequence`` of the chosen
            stable interval (inclusive), or ``None``.
    """

    mask: np.ndarray
    threshold: float
    normalized_threshold: int
    anomaly_count: int
    count_sequence: np.ndarray
    stable_interval: tuple[int, int] | None


def select_stable_interval(count_sequence: Sequence[int] | np.ndarray, min_interval_len: int) -> tuple[int, int] | None:
    """Pick the stable interval MEBin uses, with the reference's tie-breaking.

    A stable interval is a maximal run of equal, non-zero counts that is at least
    ``min_interval_len`` long. Every count keeps its longest run (the later one on
    a tie); the winning count is the one whose longest run is longest, ties going
    to the count whose first stable interval appears first in the sequence.

    Args:
        count_sequence: Component counts ordered from the highest threshold to the lowest.
        min_interval_len: Minimum length of a stable interval.

    Returns:
        tuple[int, int] | None: Inclusive ``(start, end)`` indices of the chosen run, or
        ``None`` when the sequence has no stable interval.

    Example:
        >>> select_stable_interval([0, 2, 2, 2, 2, 1, 1, 1, 1, 1], min_interval_len=4)
        (5, 9)
        >>> select_stable_interval([3, 3, 0, 1], min_interval_len=4) is None
        True
    """
    counts = [int(value) for value in count_sequence]
    best: dict[int, tuple[int, int]] = {}  # insertion order = order of first stable interval
    start = 0
    while start < len(counts):
        end = start
        while end + 1 < len(counts) and counts[end + 1] == counts[start]:
            end += 1
        value = counts[start]
        if value != 0 and end - start + 1 >= min_interval_len:
            previous = best.get(value)
            # ">=": among equally long runs of one count the reference keeps the last one.
            if previous is None or end - start >= previous[1] - previous[0]:
                best[value] = (start, end)
        start = end + 1
    if not best:
        return None
    return max(best.values(), key=lambda run: run[1] - run[0])  # max() keeps the first on ties


class MEBin:
    """Main Element Binarization of a set of anomaly maps, scikit-learn style.

    ``fit`` computes the set-level search range, ``transform`` binarises maps
    with it. The results are identical to the reference's per-threshold OpenCV
    loop (see the module docstring for the exact semantics).

    Args:
        step: Step of the threshold sweep on the normalised ``0 .. 255`` scale; the
            thresholds are ``range(255, 0, -step)`` (64 thresholds for ``step=4``).
        min_interval_len: Minimum number of consecutive thresholds with the same
            non-zero component count for a stable interval.
        erode: Erode each binary map before counting, and the final mask.
        kernel_size: Side of the square all-ones erosion kernel (OpenCV anchor).
        connectivity: Connectivity of a component, ``8`` (reference) or ``4``.
        lower_bound: How ``min_th`` is chosen when fitting.
            ``"min_peak"`` (reference): the smallest per-image peak. It assumes the set
            contains normal images; without any, the map with the smallest peak can
            never be binarised (AnomalyNCD issue #8).
            ``"global_min"``: the smallest value of all maps, the workaround for sets
            known to hold no normal image.
            A float: a fixed lower bound (the AnomalyNCD authors suggest e.g. 0).
            Whatever the choice, a collapsed range (``max_th == min_th``, e.g. a set of
            one map or maps with equal peaks) falls back to the global minimum with a
            warning.
        integer_threshold: Truncate the threshold in map units with ``int()`` as the
            reference does for its ``uint8`` maps. ``None`` truncates for maps with an
            integer or boolean dtype only (for which the mask is the same either
            way); ``False`` keeps float thresholds; ``True`` always truncates.
        n_jobs: Worker threads for ``transform``; ``None`` uses every CPU core. The default 1
            was the fastest measured on 2 cores (see the module docstring).

    Attributes:
        min_th_: Lower end of the search range, in map units (after ``fit``).
        max_th_: Upper end of the search range, in map units (after ``fit``).
        n_maps_seen_: Number of maps the range was fitted on.
        range_note_: Why the range deviates from ``lower_bound`` (collapsed or empty), or ``None``.

    Example:
        >>> import numpy as np
        >>> maps = [np.zeros((32, 32)), np.zeros((40, 20))]
        >>> maps[0][8:20, 8:20] = 1.0
        >>> maps[1][5, 5] = 0.2
        >>> mebin = MEBin(n_jobs=1).fit(maps)
        >>> (mebin.min_th_, mebin.max_th_)
        (0.2, 1.0)
        >>> [result.anomaly_count for result in mebin.transform(maps)]
        [1, 0]
    """

    def __init__(
        self,
        *,
        step: int = 4,
        min_interval_len: int = 4,
        erode: bool = True,
        kernel_size: int = 6,
        connectivity: int = 8,
        lower_bound: LowerBound = "min_peak",
        integer_threshold: bool | None = None,
        n_jobs: int | None = 1,
    ) -> None:
        if not 1 <= step <= _NORMALISED_MAX:
            msg = f"step must be in [1, 255], got {step}"
            raise ValueError(msg)
        if min_interval_len < 1:
            msg = f"min_interval_len must be >= 1, got {min_interval_len}"
            raise ValueError(msg)
        if kernel_size < 1:
            msg = f"kernel_size must be >= 1, got {kernel_size}"
            raise ValueError(msg)
        if connectivity not in {4, 8}:
            msg = f"connectivity must be 4 or 8, got {connectivity}"
            raise ValueError(msg)
        if isinstance(lower_bound, str) and lower_bound not in {"min_peak", "global_min"}:
            msg = f"lower_bound must be 'min_peak', 'global_min' or a number, got {lower_bound!r}"
            raise ValueError(msg)
        if not isinstance(lower_bound, str) and not math.isfinite(lower_bound):
            msg = f"lower_bound must be finite, got {lower_bound}"
            raise ValueError(msg)
        if n_jobs is not None and n_jobs < 1:
            msg = f"n_jobs must be >= 1 or None, got {n_jobs}"
            raise ValueError(msg)
        self.step = step
        self.min_interval_len = min_interval_len
        self.erode = erode
        self.kernel_size = kernel_size
        self.connectivity = connectivity
        self.lower_bound = lower_bound
        self.integer_threshold = integer_threshold
        self.n_jobs = n_jobs
        self._reset_statistics()

    # ------------------------------------------------------------------ range
    @property
    def thresholds(self) -> np.ndarray:
        """Thresholds of the sweep on the normalised scale, from high to low."""
        return np.arange(_NORMALISED_MAX, 0, -self.step)

    @property
    def is_fitted(self) -> bool:
        """Whether a search range is available for ``transform``."""
        return self.min_th_ is not None and self.max_th_ is not None

    def fitted_range(self) -> tuple[float, float]:
        """The search range ``(min_th_, max_th_)`` in map units.

        Returns:
            ``(min_th_, max_th_)``.

        Raises:
            RuntimeError: before ``fit``, ``partial_fit`` or ``set_range``.
        """
        if self.min_th_ is None or self.max_th_ is None:
            msg = "MEBin has no search range: call fit(), partial_fit() or set_range() first"
            raise RuntimeError(msg)
        return self.min_th_, self.max_th_

    def _reset_statistics(self) -> None:
        self.min_th_: float | None = None
        self.max_th_: float | None = None
        self.n_maps_seen_ = 0
        self.range_note_: str | None = None
        self._range_warned = False
        self._peak_min = math.inf
        self._peak_max = -math.inf
        self._global_min = math.inf

    def fit(self, maps: AnomalyMaps) -> "MEBin":
        """Compute the set-level search range from a set of anomaly maps.

        Args:
            maps: The whole set to binarise (all defect images and the normal ones).

        Returns:
            MEBin: ``self``.

        Raises:
            ValueError: If ``maps`` is empty or a map is not 2-D, empty, or not finite.
        """
        self._reset_statistics()
        if len(maps) == 0:
            msg = "MEBin.fit needs at least one anomaly map"
            raise ValueError(msg)
        self.partial_fit(maps)
        self._warn_about_range()
        return self

    def partial_fit(self, maps: AnomalyMaps) -> "MEBin":
        """Update the search range with more maps of the same set (e.g. one batch).

        The range after several calls equals the range ``fit`` computes on all the
        maps together. A warning about a collapsed range is deferred to the next
        ``transform``, since one batch alone may well collapse.

        Args:
            maps: Further maps of the set.

        Returns:
            MEBin: ``self``.

        Raises:
            ValueError: If a map is not 2-D, empty, or not finite.
        """
        for index, anomaly_map in enumerate(_as_map_list(maps)):
            peak, low = _peak_and_minimum(anomaly_map, index)
            self._peak_max = max(self._peak_max, peak)
            self._peak_min = min(self._peak_min, peak)
            self._global_min = min(self._global_min, low)
            self.n_maps_seen_ += 1
        if self.n_maps_seen_:
            self._resolve_range()
        return self

    def set_range(self, min_th: float, max_th: float) -> "MEBin":
        """Use a known search range instead of fitting one.

        Args:
            min_th: Lower end of the range, in map units.
            max_th: Upper end of the range, in map units.

        Returns:
            MEBin: ``self``.

        Raises:
            ValueError: If a bound is not finite or ``min_th > max_th``.
        """
        if not (math.isfinite(min_th) and math.isfinite(max_th)) or min_th > max_th:
            msg = f"need finite min_th <= max_th, got min_th={min_th}, max_th={max_th}"
            raise ValueError(msg)
        self._reset_statistics()
        self.min_th_, self.max_th_ = float(min_th), float(max_th)
        if self.max_th_ == self.min_th_:
            self.range_note_ = f"MEBin search range is empty (min_th == max_th == {max_th}): every mask will be empty."
        self._warn_about_range()
        return self

    def _resolve_range(self) -> None:
        max_th = self._peak_max
        if self.lower_bound == "min_peak":
            min_th = self._peak_min
        elif self.lower_bound == "global_min":
            min_th = self._global_min
        else:
            min_th = float(self.lower_bound)
        self.range_note_ = None
        if min_th >= max_th and min_th != self._global_min:
            self.range_note_ = (
                f"MEBin search range collapsed (min_th={min_th} >= max_th={max_th}: a set of one map, maps with "
                f"equal peaks, or a lower bound above the peaks); using the global minimum {self._global_min} "
                "of the maps as lower bound instead."
            )
            min_th = self._global_min
        if min_th >= max_th:
            self.range_note_ = f"MEBin search range is empty: all maps are constant at {max_th}; every mask is empty."
        self.min_th_, self.max_th_ = float(min_th), float(max_th)
        self._range_warned = False

    def _warn_about_range(self) -> None:
        if self.range_note_ is not None and not self._range_warned:
            warnings.warn(self.range_note_, RuntimeWarning, stacklevel=3)
            self._range_warned = True

    # -------------------------------------------------------------- transform
    def transform(
        self,
        maps: AnomalyMaps,
        output_sizes: tuple[int, int] | Sequence[tuple[int, int] | None] | None = None,
    ) -> list[MEBinResult]:
        """Binarise anomaly maps with the fitted search range.

        Args:
            maps: Anomaly maps to binarise.
            output_sizes: Optional ``(height, width)`` to resize every mask to (nearest
                neighbour, as the reference), or one such size (or ``None``) per map.

        Returns:
            list[MEBinResult]: One result per map, in order.

        Raises:
            RuntimeError: If no search range was fitted or set.
            ValueError: If a map is not 2-D, empty, or not finite, or ``output_sizes``
                does not match ``maps``.
        """
        plan = self._plan()
        self._warn_about_range()
        map_list = _as_map_list(maps)
        sizes = _per_map_sizes(output_sizes, len(map_list))
        indices = range(len(map_list))
        workers = min(self.n_jobs or _cpu_count(), len(map_list))
        if workers <= 1:
            return [plan.binarize(map_list[i], i, sizes[i]) for i in indices]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda i: plan.binarize(map_list[i], i, sizes[i]), indices))

    def fit_transform(
        self,
        maps: AnomalyMaps,
        output_sizes: tuple[int, int] | Sequence[tuple[int, int] | None] | None = None,
    ) -> list[MEBinResult]:
        """Fit the search range on ``maps`` and binarise them.

        Args:
            maps: The whole set to binarise.
            output_sizes: See :meth:`transform`.

        Returns:
            list[MEBinResult]: One result per map, in order.
        """
        return self.fit(maps).transform(maps, output_sizes)

    def _plan(self) -> "_Plan":
        min_th, max_th = self.fitted_range()
        thresholds = self.thresholds
        return _Plan(
            min_th=min_th,
            max_th=max_th,
            step=self.step,
            n_thresholds=len(thresholds),
            # Entry k: number of thresholds <= k, i.e. below ceil(norm) = k + 1 (thresholds are >= 1).
            level_table=np.searchsorted(np.sort(thresholds), np.arange(256), side="right").astype(np.uint8),
            kernel=np.ones((self.kernel_size, self.kernel_size), dtype=np.uint8) if self.erode else None,
            connectivity=self.connectivity,
            min_interval_len=self.min_interval_len,
            integer_threshold=self.integer_threshold,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(step={self.step}, min_interval_len={self.min_interval_len}, erode={self.erode}, "
            f"kernel_size={self.kernel_size}, connectivity={self.connectivity}, lower_bound={self.lower_bound!r}, "
            f"integer_threshold={self.integer_threshold}, n_jobs={self.n_jobs})"
        )


@dataclass(frozen=True)
class _Plan:
    """Everything one map needs, fixed once per ``transform`` call (and shared by its threads)."""

    min_th: float
    max_th: float
    step: int
    n_thresholds: int
    level_table: np.ndarray
    kernel: np.ndarray | None
    connectivity: int
    min_interval_len: int
    integer_threshold: bool | None

    def binarize(self, anomaly_map: np.ndarray, index: int, output_size: tuple[int, int] | None) -> MEBinResult:
        _peak_and_minimum(anomaly_map, index)  # validates shape and finiteness
        if self.max_th > self.min_th:
            levels = self.quantise(anomaly_map)
            if self.kernel is not None:
                levels = cv2.erode(levels, self.kernel)
            # component_counts is indexed by ascending level; the sequence runs from high thresholds to low.
            count_sequence = component_counts(levels, self.n_thresholds, self.connectivity)[::-1].copy()
        else:
            count_sequence = np.zeros(self.n_thresholds, dtype=np.int64)
        interval = select_stable_interval(count_sequence, self.min_interval_len)

        if interval is None:
            normalized_threshold = _NORMALISED_MAX
            threshold = self.max_th
            mask = np.zeros(anomaly_map.shape, dtype=bool)
        else:
            normalized_threshold = _NORMALISED_MAX - interval[1] * self.step
            # Same operation order as the reference, in float64.
            threshold = normalized_threshold * (self.max_th - self.min_th) / _NORMALISED_MAX + self.min_th
            if self.truncates(anomaly_map):
                threshold = float(int(threshold))
            binary: np.ndarray = _greater(anomaly_map, threshold).view(np.uint8)
            if self.kernel is not None:
                binary = cv2.erode(binary, self.kernel)
            mask = binary.view(bool)
        if output_size is not None and tuple(output_size) != mask.shape:
            height, width = output_size
            mask = cv2.resize(mask.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).view(bool)
        return MEBinResult(
            mask=mask,
            threshold=float(threshold),
            normalized_threshold=int(normalized_threshold),
            anomaly_count=0 if interval is None else int(count_sequence[interval[0]]),
            count_sequence=count_sequence,
            stable_interval=interval,
        )

    def quantise(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Level of each pixel: how many sweep thresholds its normalised value exceeds."""
        levels = np.zeros(anomaly_map.shape, dtype=np.uint8)
        # Only pixels above min_th can get a level above 0: quantise just their bounding box.
        left, top, width, height = cv2.boundingRect(_greater(anomaly_map, self.min_th).view(np.uint8))
        if width == 0:
            return levels
        window = (slice(top, top + height), slice(left, left + width))
        values = anomaly_map[window].astype(np.float64)
        normalised = (values - self.min_th) / (self.max_th - self.min_th) * _NORMALISED_MAX
        # For an integer t, norm > t iff ceil(norm) > t: exact, unlike dividing by the step. Clipping to
        # [1, 256] first changes no level (thresholds are in [1, 255]) and lets ceil(norm) - 1 index a
        # 256-entry table; pixels below min_th (the reference's 0) are negative here and get level 0.
        np.clip(normalised, 1, _NORMALISED_MAX + 1, out=normalised)
        np.ceil(normalised, out=normalised)
        normalised -= 1
        levels[window] = cv2.LUT(normalised.astype(np.uint8), self.level_table)
        return levels

    def truncates(self, anomaly_map: np.ndarray) -> bool:
        if self.integer_threshold is None:
            return bool(np.issubdtype(anomaly_map.dtype, np.integer) or anomaly_map.dtype == np.bool_)
        return self.integer_threshold


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _as_map_list(maps: AnomalyMaps) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray):
        if maps.ndim != 3:
            msg = f"an array of anomaly maps must have shape (N, H, W), got {maps.shape}"
            raise ValueError(msg)
        return list(maps)
    return [np.asarray(anomaly_map) for anomaly_map in maps]


def _peak_and_minimum(anomaly_map: np.ndarray, index: int) -> tuple[float, float]:
    if anomaly_map.ndim != 2 or anomaly_map.size == 0:
        msg = f"anomaly map {index} must be a non-empty 2-D array, got shape {anomaly_map.shape}"
        raise ValueError(msg)
    if not (np.issubdtype(anomaly_map.dtype, np.number) or anomaly_map.dtype == np.bool_):
        msg = f"anomaly map {index} must be numeric, got dtype {anomaly_map.dtype}"
        raise ValueError(msg)
    # max/min propagate NaN, so checking the two extremes catches NaN and +-inf.
    peak, low = float(anomaly_map.max()), float(anomaly_map.min())
    if not (math.isfinite(peak) and math.isfinite(low)):
        msg = f"anomaly map {index} contains NaN or infinite values"
        raise ValueError(msg)
    return peak, low


def _greater(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """``anomaly_map > threshold`` decided in float64, without converting a float32 map."""
    if anomaly_map.dtype == np.float32:
        # a > t iff a > (largest float32 <= t) for any float32 a.
        bound = np.float32(threshold)
        if float(bound) > threshold:
            bound = np.nextafter(bound, np.float32(-np.inf))
        return anomaly_map > bound
    return anomaly_map.astype(np.float64, copy=False) > threshold


def _per_map_sizes(
    output_sizes: tuple[int, int] | Sequence[tuple[int, int] | None] | None,
    n_maps: int,
) -> list[tuple[int, int] | None]:
    if output_sizes is None:
        return [None] * n_maps
    if len(output_sizes) == 2 and all(isinstance(side, int | np.integer) for side in output_sizes):
        return [(int(output_sizes[0]), int(output_sizes[1]))] * n_maps  # type: ignore[arg-type]
    sizes = list(output_sizes)
    if len(sizes) != n_maps:
        msg = f"got {len(sizes)} output sizes for {n_maps} maps"
        raise ValueError(msg)
    return sizes  # type: ignore[return-value]
