# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""Speed and exactness of MEBin: ours vs. the reference per-threshold OpenCV loop vs. anomalib.

All variants run in one process on the same synthetic maps (smooth noise backgrounds plus
a few gaussian blobs; a fraction of the maps is normal, as in a test split):

(a) ours, one map per ``transform`` call (``n_jobs=1``);
(b) ours, the whole set in one ``transform`` call, with ``n_jobs=1`` and with one thread
    per core. (OpenCV's own thread pool, used by all variants, is left as configured.)
(c) the reference semantics as AnomalyNCD runs them: per threshold, binarise, ``cv2.erode``,
    ``cv2.connectedComponentsWithStats``;
(d) anomalib 2.7's ``mebin_binarize`` (kornia, 1000-iteration connected components per
    threshold). It takes minutes per 256x256 map, so it runs on a few small maps (default
    2 maps of 64x64) under a time budget, next to (a) and (c) on the same small maps.

Ours and (c) must agree exactly (thresholds, counts, count sequences, masks); the script
exits with status 1 otherwise. anomalib's variant has different semantics (per-batch
range, clamp, no final erosion, no integer truncation, first longest run on ties) and is
compared only where the semantics meet: same range, its normalised threshold and count
sequence, and its mask against ours without the final erosion.

Usage:
    python benchmarks/mebin_speed.py --n-maps 200 --size 256
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from anomalib_ncd.regions.mebin import MEBin

T = TypeVar("T")


@dataclass
class LoopResult:
    threshold: float
    count: int
    sequence: list[int]
    mask: np.ndarray


def make_maps(n_maps: int, height: int, width: int, normal_fraction: float, seed: int) -> list[np.ndarray]:
    """Detector-like maps: smooth noise, fine noise and, for defect maps, 1-4 gaussian blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    maps = []
    for index in range(n_maps):
        coarse = rng.normal(size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
        anomaly_map = 0.25 + 0.04 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        anomaly_map += rng.normal(scale=0.01, size=(height, width)).astype(np.float32)
        if index >= round(n_maps * normal_fraction):
            for _ in range(int(rng.integers(1, 5))):
                cy, cx = rng.uniform(0, height), rng.uniform(0, width)
                sigma = rng.uniform(0.02, 0.08) * min(height, width)
                anomaly_map += rng.uniform(0.15, 0.6) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        maps.append(anomaly_map.astype(np.float32))
    rng.shuffle(maps)
    return maps


def opencv_loop(anomaly_map: np.ndarray, min_th: float, max_th: float, step: int = 4) -> LoopResult:
    """The reference semantics, one binarisation, erosion and labelling per threshold."""
    kernel = np.ones((6, 6), np.uint8)
    values = anomaly_map.astype(np.float64)
    norm = np.where(values < min_th, 0, (values - min_th) / (max_th - min_th) * 255)
    sequence = []
    for t in range(255, 0, -step):
        binary = cv2.erode(np.where(norm > t, 255, 0).astype(np.uint8), kernel)
        sequence.append(cv2.connectedComponentsWithStats(binary, connectivity=8)[0] - 1)
    runs: dict[int, list[tuple[int, int]]] = {}
    start = 0
    while start < len(sequence):
        end = start
        if sequence[start]:
            while end + 1 < len(sequence) and sequence[end + 1] == sequence[start]:
                end += 1
            if end - start + 1 >= 4:
                runs.setdefault(sequence[start], []).append((start, end))
        start = end + 1
    if not runs:
        return LoopResult(max_th, 0, sequence, np.zeros(anomaly_map.shape, bool))
    longest = {count: max(e - s for s, e in spans) for count, spans in runs.items()}
    count = max(longest, key=longest.get)
    span = sorted(runs[count], key=lambda run: run[1] - run[0])[-1]
    threshold = (255 - span[1] * step) * (max_th - min_th) / 255 + min_th
    mask = cv2.erode(np.where(values > threshold, 255, 0).astype(np.uint8), kernel) > 0
    return LoopResult(threshold, count, sequence, mask)


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = function()
    return (time.perf_counter() - start) * 1e3, value


def compare_with_loop(maps: list[np.ndarray], mebin: MEBin) -> tuple[list[float], list[float], int]:
    """Per-map times of (a) and (c), each in its own pass (interleaving them leaves ours cache-cold)."""
    loop_ms, expected = [], []
    for anomaly_map in maps:
        elapsed, result = timed(lambda m=anomaly_map: opencv_loop(m, mebin.min_th_, mebin.max_th_))
        loop_ms.append(elapsed)
        expected.append(result)
    ours_ms, mismatches = [], 0
    for index, anomaly_map in enumerate(maps):
        elapsed, results = timed(lambda m=anomaly_map: mebin.transform([m]))
        ours_ms.append(elapsed)
        ours, reference = results[0], expected[index]
        same = (
            ours.threshold == reference.threshold
            and ours.anomaly_count == reference.count
            and ours.count_sequence.tolist() == reference.sequence
            and np.array_equal(ours.mask, reference.mask)
        )
        if not same:
            mismatches += 1
            print(f"  MISMATCH on map {index}: ours {ours.threshold}, {ours.anomaly_count}; loop {reference}")
    return ours_ms, loop_ms, mismatches


def run_anomalib(maps: list[np.ndarray], budget_s: float) -> None:
    """anomalib's kornia MEBin on pairs of maps (one batch each) within a time budget."""
    # Heavy imports, only needed for (d).
    import torch
    from anomalib.post_processing.mebin import mebin_binarize

    batch_size = 2
    spent, done, times_ms = 0.0, 0, []
    mebin = MEBin(n_jobs=1)
    loop_ms, ours_ms = [], []
    while done + batch_size <= len(maps) and spent < budget_s:
        batch = maps[done : done + batch_size]
        tensor = torch.from_numpy(np.stack(batch))[:, None]
        elapsed, (masks, thresholds) = timed(lambda t=tensor: mebin_binarize(t))
        spent += elapsed / 1e3
        times_ms.extend([elapsed / batch_size] * batch_size)
        # Same (per-batch) range for ours and the loop, so the timings and results line up.
        mebin.fit(batch)
        for offset, anomaly_map in enumerate(batch):
            loop_time, expected = timed(lambda m=anomaly_map: opencv_loop(m, mebin.min_th_, mebin.max_th_))
            ours_time, results = timed(lambda m=anomaly_map: mebin.transform([m]))
            loop_ms.append(loop_time)
            ours_ms.append(ours_time)
            ours = results[0]
            assert expected.sequence == ours.count_sequence.tolist()
            theirs = masks[offset, 0].numpy() > 0.5
            theirs_threshold = float(thresholds[offset])
            theirs_normalised = (theirs_threshold - mebin.min_th_) / (mebin.max_th_ - mebin.min_th_) * 255
            unerorded = np.asarray(anomaly_map, np.float64) > ours.threshold
            if ours.stable_interval is None:
                unerorded[:] = False
            print(
                f"  map {done + offset}: normalised threshold anomalib {theirs_normalised:.2f} / ours "
                f"{ours.normalized_threshold} (count {ours.anomaly_count}); anomalib mask == ours before the "
                f"final erosion: {np.array_equal(theirs, unerorded)}; == ours: {np.array_equal(theirs, ours.mask)} "
                f"({int(theirs.sum())} vs {int(ours.mask.sum())} pixels)"
            )
        done += batch_size
    if not times_ms:
        print("  anomalib: budget too small for one batch")
        return
    anomalib_ms = statistics.median(times_ms)
    print(
        f"  {done} maps of {maps[0].shape[0]}x{maps[0].shape[1]}: anomalib mebin_binarize "
        f"{anomalib_ms:.1f} ms/map | OpenCV loop {statistics.median(loop_ms):.3f} ms/map | "
        f"ours {statistics.median(ours_ms):.3f} ms/map"
    )
    print(
        f"  ratios: anomalib / ours = {anomalib_ms / statistics.median(ours_ms):.0f}x, "
        f"anomalib / OpenCV loop = {anomalib_ms / statistics.median(loop_ms):.0f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-maps", type=int, default=200)
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="map side, or height width")
    parser.add_argument("--normal-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the batched runs")
    parser.add_argument("--jobs", type=int, default=0, help="threads for the batched run (0: all cores)")
    parser.add_argument("--anomalib-maps", type=int, default=2, help="maps for anomalib's mebin_binarize (0: skip)")
    parser.add_argument("--anomalib-size", type=int, default=64, help="side of anomalib's (smaller) maps")
    parser.add_argument("--anomalib-budget-s", type=float, default=120.0)
    args = parser.parse_args()
    height, width = (args.size * 2)[:2]
    jobs = args.jobs or None

    maps = make_maps(args.n_maps, height, width, args.normal_fraction, args.seed)
    mebin = MEBin(n_jobs=1).fit(maps)
    print(
        f"{args.n_maps} maps of {height}x{width} ({args.normal_fraction:.0%} normal); range "
        f"[{mebin.min_th_:.5f}, {mebin.max_th_:.5f}]; OpenCV threads {cv2.getNumThreads()}"
    )
    mebin.transform(maps[:4])  # warm-up

    ours_ms, loop_ms, mismatches = compare_with_loop(maps, mebin)
    single = statistics.median(ours_ms)
    loop = statistics.median(loop_ms)

    batched = MEBin(n_jobs=jobs).set_range(mebin.min_th_, mebin.max_th_)
    serial = MEBin(n_jobs=1).set_range(mebin.min_th_, mebin.max_th_)
    batched_ms, serial_ms = [], []
    for _ in range(args.repeats):
        elapsed, batch_results = timed(lambda: batched.transform(maps))
        batched_ms.append(elapsed / len(maps))
        elapsed, serial_results = timed(lambda: serial.transform(maps))
        serial_ms.append(elapsed / len(maps))
    for a, b in zip(batch_results, serial_results, strict=True):
        if not (np.array_equal(a.mask, b.mask) and a.threshold == b.threshold):
            mismatches += 1
    counts = [result.anomaly_count for result in serial_results]

    print(f"estimated counts: {np.bincount(counts).tolist()} (maps per count 0, 1, 2, ...)")
    print(f"(c) OpenCV per-threshold loop     : {loop:8.3f} ms/map (median)")
    print(f"(a) ours, one map per call        : {single:8.3f} ms/map (median)  -> {loop / single:5.1f}x faster")
    print(
        f"(b) ours, batched, {'n_jobs=1':<15}: {statistics.median(serial_ms):8.3f} ms/map  -> "
        f"{loop / statistics.median(serial_ms):5.1f}x faster"
    )
    threads = f"n_jobs={batched.n_jobs or os.cpu_count()}"
    print(
        f"(b) ours, batched, {threads:<15}: {statistics.median(batched_ms):8.3f} ms/map  -> "
        f"{loop / statistics.median(batched_ms):5.1f}x faster"
    )
    print(
        f"exactness vs OpenCV loop: {len(maps) - mismatches}/{len(maps)} maps identical "
        "(thresholds, counts, count sequences, masks)"
    )

    if args.anomalib_maps:
        small = make_maps(args.anomalib_maps, args.anomalib_size, args.anomalib_size, 0.5, args.seed + 1)
        print(f"(d) anomalib 2.7 mebin_binarize (budget {args.anomalib_budget_s:.0f} s):")
        run_anomalib(small, args.anomalib_budget_s)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
