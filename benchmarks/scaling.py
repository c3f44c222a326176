"""How the cost of each discovery stage grows with the number of regions: time and peak memory.

For each size, a synthetic set (``--modes``: the small default images and/or the high-resolution
small-defect mode) is generated with about that many images, and each image gets a map made from
its ground-truth mask (blurred, plus noise; normal images noise only). These "oracle" maps leave the
detector out: its cost is anomalib's (Patchcore's nearest-neighbour search) and is measured by
``predict_speed.py``. Then, in a fresh process per size, with the CPU profile:

- ``regions``: MEBin + anomaly-centred crops (``extract_regions``);
- ``views``: the frozen view cache (on disk: ``view_cache_dir``);
- ``epoch``: one training epoch through anomalib's ``Engine`` (``DefectDiscovery.fit`` with
  ``epochs=1``, less the view cache and the classification of the set inside it);
- ``discover``: classifying the fit set's regions and images after training;
- ``predict``: ``DefectDiscovery.classify`` on the same images as new ones (image reading, MEBin
  with the fitted range, regions, network, fusion);
- ``report``: the HTML report.

Peak RSS is taken per stage (Linux: the high-water mark is reset before each stage through
``/proc/self/clear_refs``). Prints a table with seconds, milliseconds per region and peak RSS per
stage and size, and the growth factor of each from one size to the next (4x the regions: a factor
near 4 is linear).

Usage:
    python benchmarks/scaling.py [--sizes 500,2000,8000] [--modes default,highres_small] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("regions", "views", "epoch", "discover", "predict", "report")
N_TYPES = 4


def peak_rss_gb() -> float:
    """The process's resident-memory high-water mark since the last reset (Linux), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak() -> None:
    """Reset the high-water mark to the current resident memory (Linux ``clear_refs`` 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def make_set(root: Path, mode: str, n_images: int, seed: int) -> Any:
    """A synthetic set of about ``n_images`` test images (80% defects of 4 types, 20% normal)."""
    from anomalib_ncd.commands.datasets import SYNTHETIC_PRESETS
    from anomalib_ncd.data.synthetic import generate_synthetic_dataset

    per_type = max(1, (n_images * 4 // 5) // N_TYPES)
    n_good = max(1, n_images - per_type * N_TYPES)
    preset = dict(SYNTHETIC_PRESETS[mode])
    return generate_synthetic_dataset(
        root, "brick", n_train_good=1, n_test_good=n_good, n_per_type=per_type, seed=seed, **preset
    )


def oracle_maps(test: Any, long_side: int = 256, seed: int = 0) -> Any:
    """Maps from the ground-truth masks at a detector-like resolution: blurred masks plus noise."""
    import cv2

    from anomalib_ncd.data.image_io import read_image_size
    from anomalib_ncd.data.masks import read_row_mask
    from anomalib_ncd.maps.map_set import AnomalyMapSet

    rng = np.random.default_rng(seed)
    maps, shapes = [], []
    for _, row in test.iterrows():
        shape = read_image_size(row["image_path"])
        scale = long_side / max(shape)
        size = (max(8, round(shape[1] * scale)), max(8, round(shape[0] * scale)))
        mask = cv2.resize(read_row_mask(row, shape).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
        maps.append((mask + 0.05 * rng.random(mask.shape, dtype=np.float32)).astype(np.float32))
        shapes.append(shape)
    return AnomalyMapSet.from_arrays(maps, list(test["image_path"]), image_shapes=shapes, samples=test)


def run_size(mode: str, size: int, out: Path, seed: int) -> dict[str, Any]:
    """Every stage at one size, in this process; returns seconds and peak RSS per stage."""
    import torch

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.pipeline.estimator import DefectDiscovery
    from anomalib_ncd.quiet import configure_output
    from anomalib_ncd.regions.extract import extract_regions

    configure_output(verbose=False)
    torch.manual_seed(seed)
    folder = out / f"{mode}-{size}"
    table = make_set(folder / "data", mode, size, seed)
    test = table[table["split"] == "test"].reset_index(drop=True)
    maps = oracle_maps(test, seed=seed)
    result: dict[str, Any] = {"mode": mode, "images": len(test), "seconds": {}, "peak_rss_gb": {}}

    def stage(name: str, start: float) -> None:
        result["seconds"][name] = time.perf_counter() - start
        result["peak_rss_gb"][name] = peak_rss_gb()

    reset_peak()
    start = time.perf_counter()
    model = AnomalyNCD(n_novel_classes=N_TYPES + 1, training={"epochs": 1})
    regions = extract_regions(maps, crop_settings=model.crop_settings, working_long_side=model.working_long_side)
    stage("regions", start)
    result["regions"] = len(regions)

    # time the model's own steps inside fit, to split the fit into its stages
    spent: dict[str, float] = {"prepare": 0.0, "discover": 0.0}
    originals = {name: getattr(AnomalyNCD, name) for name in spent}

    def timed(name: str) -> Any:
        def wrapper(self: AnomalyNCD, *args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - begin

        return wrapper

    for name in spent:
        setattr(AnomalyNCD, name, timed(name))
    reset_peak()
    start = time.perf_counter()
    discovery = DefectDiscovery(
        model,
        progress=False,
        root_dir=folder / "engine",
        checkpoint_dir=folder / "weights",
        view_cache_dir=folder / "views",
    )
    discovery.fit(regions)
    fit_seconds = time.perf_counter() - start
    for name, original in originals.items():
        setattr(AnomalyNCD, name, original)
    result["seconds"]["views"] = spent["prepare"]
    result["seconds"]["discover"] = spent["discover"]
    result["seconds"]["epoch"] = fit_seconds - spent["prepare"] - spent["discover"]
    for name in ("views", "epoch", "discover"):
        result["peak_rss_gb"][name] = peak_rss_gb()  # one peak for the whole fit

    reset_peak()
    start = time.perf_counter()
    discovery.classify(maps)
    stage("predict", start)

    reset_peak()
    start = time.perf_counter()
    discovery.write_report(folder / "report")
    stage("report", start)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    """Seconds, ms per region and peak RSS per stage and size, with the growth factor per step."""
    for mode in dict.fromkeys(result["mode"] for result in results):
        rows = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["regions"])
        print(f"\n{mode}: stage | " + " | ".join(f"{r['regions']} regions ({r['images']} images)" for r in rows))
        for name in STAGES:
            cells = []
            for index, row in enumerate(rows):
                seconds, peak = row["seconds"][name], row["peak_rss_gb"][name]
                cell = f"{seconds:.1f} s, {1000 * seconds / row['regions']:.1f} ms/region, {peak:.2f} GB"
                if index:
                    before = rows[index - 1]
                    ratio = row["regions"] / before["regions"]
                    cell += f" (x{seconds / max(before['seconds'][name], 1e-9):.1f} time for x{ratio:.1f} regions)"
                cells.append(cell)
            print(f"  {name} | " + " | ".join(cells))


def main() -> None:
    """Run each size in its own process (fresh memory peaks), then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,2000,8000", help="comma-separated numbers of images (~regions)")
    parser.add_argument("--modes", default="default", help="comma-separated synthetic modes")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/scaling"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: mode:size in this process
    args = parser.parse_args()
    if args.one:
        mode, size = args.one.split(":")
        result = run_size(mode, int(size), args.out, args.seed)
        print("RESULT " + json.dumps(result))
        return
    results = []
    for mode in args.modes.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            command = [
                sys.executable,
                __file__,
                "--one",
                f"{mode}:{size}",
                "--out",
                str(args.out),
                "--seed",
                str(args.seed),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ.copy())
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"size {size} ({mode}) failed")
            results.append(json.loads(lines[-1][len("RESULT ") :]))
            print(json.dumps(results[-1]), flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
