"""Region stage on MTD: anomalib Patchcore with real ImageNet weights -> MEBin -> regions.

Prints the detector's image AUROC and pixel AUROC (computed on the raw maps brought back to each
image's own size and aspect ratio), and how well the extracted regions cover the true defects:

* region recall: fraction of ground-truth defect components (8-connected) with at least half of
  their pixels inside a region box of their image;
* pixel recall: fraction of all defect pixels inside a region box;
* box area: mean fraction of a defect image covered by its boxes (small = tight regions);
* normal images with no region found (whole-image fallback), and images on each path (MEBin
  region, soft path, nothing found).

Protocol: MTD split of :func:`anomalib_ncd.data.load_mtd` (80% of Free, 762 images, trains the
detector; the rest plus all defect images are the discovery set). The region stages of
``benchmarks/ncd_mtd.py`` are compared side by side, each with its detector input (``current``:
squashed to 256 x 256; ``new``: letterboxed at a side chosen from the images); the Patchcores are
trained as ``anomalib-ncd discover`` trains them and shared with ``ncd_mtd.py`` (same checkpoint
folder). ``--max-train`` caps the Free training images (0: all).

Usage:
    python benchmarks/detector_mtd.py [--mtd ../shared/datasets/mtd] [--stages current,soft,resolution,new]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import cv2
import numpy as np
from ncd_mtd import DETECTOR_ROOT, STAGE_DETECTOR, detector_maps, stage_regions

from anomalib_ncd.data import load_mtd
from anomalib_ncd.data.masks import read_row_mask
from anomalib_ncd.regions.extract import RegionSet

DEFAULT_MTD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"


def coverage(regions: RegionSet, truths: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """How well the regions cover the true defects, and which path each image took."""
    covered_components = total_components = pixel_hits = pixel_total = 0
    box_fractions, normal_empty = [], []
    paths = {"region": 0, "soft": 0, "none": 0}
    for index, truth in enumerate(truths):
        covered = np.zeros_like(truth)
        image_regions = regions.of_image(index)
        sources = {region.source for region in image_regions}
        paths[next(path for path in ("region", "soft", "none") if path in sources)] += 1
        for region in image_regions:
            if region.source != "none":
                x0, y0, x1, y1 = region.box
                covered[y0:y1, x0:x1] = True
        if not labels[index]:
            normal_empty.append(all(region.source == "none" for region in image_regions))
            continue
        box_fractions.append(covered.mean())
        pixel_hits += int(covered[truth].sum())
        pixel_total += int(truth.sum())
        n_components, component_map = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
        for component in range(1, n_components):
            pixels = component_map == component
            total_components += 1
            covered_components += int(covered[pixels].mean() >= 0.5)
    return {
        "region_recall": covered_components / max(total_components, 1),
        "pixel_recall": pixel_hits / max(pixel_total, 1),
        "box_area": float(np.mean(box_fractions)),
        "normal_none_found": float(np.mean(normal_empty)),
        **{f"path_{path}": count for path, count in paths.items()},
    }


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--max-train", type=int, default=0, help="cap on Free images that train Patchcore (0: all)")
    parser.add_argument("--stages", default="current,new")
    parser.add_argument("--detector-root", type=Path, default=DETECTOR_ROOT)
    args = parser.parse_args()
    if not args.mtd.is_dir():
        raise SystemExit(f"MTD not found at {args.mtd}")

    start = time.perf_counter()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"].reset_index(drop=True)
    print(
        f"MTD: {int((table['split'] == 'train').sum())} Free images train Patchcore; discovery set {len(test)} "
        f"images ({dict(test['defect_type'].value_counts())})"
    )
    detectors = {}
    for stage in [name.strip() for name in args.stages.split(",") if name.strip()]:
        kind = STAGE_DETECTOR[stage]
        if kind not in detectors:
            maps, times = detector_maps(args, table, test, kind)
            labels = ~np.array(maps.is_normal)
            rows = {str(row["image_path"]): row for _, row in test.iterrows()}
            truths = [
                read_row_mask(rows[path], m.shape) if labels[i] else np.zeros(m.shape, bool)
                for i, (path, m) in enumerate(zip(maps.image_paths, maps.aligned(long_side=None), strict=True))
            ]
            detectors[kind] = (maps, truths, labels)
            fit = f"fit {times['detector_fit_s']:.0f} s, " if "detector_fit_s" in times else "checkpoint reused, "
            print(
                f"\ndetector {kind} ({times['detector_input_size']:.0f} px): image AUROC {times['image_auroc']:.3f}, "
                f"pixel AUROC {times['pixel_auroc']:.3f}; {fit}maps {times['detector_maps_s']:.0f} s"
            )
        maps, truths, labels = detectors[kind]
        region_start = time.perf_counter()
        regions = stage_regions(maps, stage, load_crops=False)
        seconds = time.perf_counter() - region_start
        stats = coverage(regions, truths, labels)
        print(
            f"stage {stage:<10} region recall {stats['region_recall']:.3f}, pixel recall {stats['pixel_recall']:.3f}, "
            f"box area {stats['box_area']:.3f}, normal with none found {stats['normal_none_found']:.3f}; "
            f"images by path: region {stats['path_region']}, soft {stats['path_soft']}, none {stats['path_none']}"
            f" ({seconds:.1f} s)"
        )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\ntotal {time.perf_counter() - start:.0f} s; peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
