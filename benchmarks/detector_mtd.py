"""Region stage on MTD: anomalib Patchcore with real ImageNet weights -> MEBin -> regions.

Prints the detector's image AUROC and pixel AUROC (computed on the raw maps brought back to each
image's own size and aspect ratio), and how well the extracted regions cover the true defects:

* region recall: fraction of ground-truth defect components (8-connected) with at least half of
  their pixels inside a region box of their image;
* pixel recall: fraction of all defect pixels inside a region box;
* box area: mean fraction of a defect image covered by its boxes (small = tight regions);
* normal images with no region found (whole-image fallback).

Protocol: MTD split of :func:`anomalib_ncd.data.load_mtd` (80% of Free trains the detector, the rest
plus all defect images are the discovery set). Patchcore's greedy coreset is slow on a 2-core CPU,
so ``--max-train`` caps the number of Free training images (chosen deterministically).

Usage:
    python benchmarks/detector_mtd.py [--mtd ../shared/datasets/mtd] [--max-train 200]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from anomalib_ncd.data import load_mtd, to_anomalib_datamodule
from anomalib_ncd.data.masks import read_row_mask
from anomalib_ncd.data.mtd import cap_detector_training
from anomalib_ncd.detector import make_patchcore, train_detector
from anomalib_ncd.maps.from_anomalib import predict_maps
from anomalib_ncd.regions.extract import extract_regions

DEFAULT_MTD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--backbone", default="mobilenetv2_100.tv_in1k")
    parser.add_argument("--max-train", type=int, default=200, help="cap on Free images that train Patchcore")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/detector_mtd"))
    args = parser.parse_args()
    if not args.mtd.is_dir():
        raise SystemExit(f"MTD not found at {args.mtd}")

    start = time.perf_counter()
    table = load_mtd(args.mtd)
    table = cap_detector_training(table, args.max_train)
    test = table[table["split"] == "test"]
    print(
        f"MTD: {int((table['split'] == 'train').sum())} Free images train Patchcore; discovery set {len(test)} "
        f"images ({dict(test['defect_type'].value_counts())})"
    )

    datamodule = to_anomalib_datamodule(
        table, "MTD", image_size=(args.image_size, args.image_size), train_batch_size=16, eval_batch_size=16
    )
    model = make_patchcore(args.backbone, coreset_sampling_ratio=args.coreset)
    fit_start = time.perf_counter()
    train_detector(model, datamodule, root_dir=args.out, max_epochs=1, accelerator="auto", devices=1)
    fit_time = time.perf_counter() - fit_start
    predict_start = time.perf_counter()
    maps = predict_maps(model, datamodule, samples=table, accelerator="auto", devices=1)
    predict_time = time.perf_counter() - predict_start

    labels = ~np.array(maps.is_normal)
    image_auroc = roc_auc_score(labels, np.array(maps.scores))
    full = maps.aligned(long_side=None)
    rows = {row.image_path: row for row in table.itertuples()}
    pixel_scores, pixel_truth, truths = [], [], []
    for index, anomaly_map in enumerate(full):
        row = rows[maps.image_paths[index]]
        truth = read_row_mask(row._asdict(), anomaly_map.shape) if labels[index] else np.zeros(anomaly_map.shape, bool)
        truths.append(truth)
        pixel_scores.append(anomaly_map.ravel())
        pixel_truth.append(truth.ravel())
    pixel_auroc = roc_auc_score(np.concatenate(pixel_truth), np.concatenate(pixel_scores))

    region_start = time.perf_counter()
    regions = extract_regions(maps)
    region_time = time.perf_counter() - region_start
    covered_components = total_components = 0
    pixel_hits = pixel_total = 0
    box_fractions, normal_empty = [], []
    for index, truth in enumerate(truths):
        covered = np.zeros_like(truth)
        image_regions = regions.of_image(index)
        for region in image_regions:
            x0, y0, x1, y1 = region.box
            covered[y0:y1, x0:x1] = True
        if not labels[index]:
            normal_empty.append(all(region.whole_image for region in image_regions))
            continue
        box_fractions.append(covered.mean())
        pixel_hits += int(covered[truth].sum())
        pixel_total += int(truth.sum())
        n_components, component_map = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
        for component in range(1, n_components):
            pixels = component_map == component
            total_components += 1
            covered_components += int(covered[pixels].mean() >= 0.5)

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    n_regions = np.bincount([region.image_index for region in regions], minlength=len(maps))
    print(f"backbone {args.backbone}, image size {args.image_size}, coreset {args.coreset}")
    print(f"image AUROC          {image_auroc:.3f}")
    print(f"pixel AUROC          {pixel_auroc:.3f}")
    print(
        f"region recall        {covered_components / max(total_components, 1):.3f} "
        f"({covered_components}/{total_components} defect components)"
    )
    print(f"pixel recall         {pixel_hits / max(pixel_total, 1):.3f}")
    print(f"box area / image     {np.mean(box_fractions):.3f} (defect images)")
    print(f"regions per image    {n_regions[labels].mean():.2f} defect, {n_regions[~labels].mean():.2f} normal")
    print(f"normal, none found   {np.mean(normal_empty):.3f}")
    print(f"MEBin range          [{regions.mebin.min_th_:.3f}, {regions.mebin.max_th_:.3f}]")
    print(
        f"time                 fit {fit_time:.0f} s, predict {predict_time:.0f} s, regions {region_time:.1f} s, "
        f"total {time.perf_counter() - start:.0f} s; peak RSS {peak_gb:.1f} GB"
    )


if __name__ == "__main__":
    main()
