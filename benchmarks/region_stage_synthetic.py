"""Region stages on high-resolution images with small defects, with a deliberately unsure detector.

The set is the synthetic generator's ``highres_small`` preset (:func:`anomalib_ncd.data.generate_highres_small`):
1024 x 768 colour images, 4 defect types of 0.05-0.5% of the image area, a third of them faint. The
detector is anomalib's Patchcore (MobileNetV2, real ImageNet weights) trained on only ``--n-train``
normal images, so it is unsure, as on real lines where few normal images are kept. The region stages
of ``benchmarks/ncd_mtd.py`` are compared side by side (``current``: input squashed to 256 x 256,
MEBin region or normal, crops of at least 20% of the image; ``new``: letterboxed input at a side
chosen from the images, the soft path, crops in units of the defect; ``soft`` and ``resolution``
each alone), and against regions cut around the ground-truth masks, each with ours, k-means, masked
pooling + k-means and Anomaly Clustering on the same frozen features.

Usage:
    python benchmarks/region_stage_synthetic.py [--n-train 10] [--n-per-type 20] [--stages current,soft,resolution,new]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from _shared import detector_quality, finish_report, patchcore_maps
from ncd_mtd import DETECTOR_INPUTS, REGION_STAGES, STAGE_DETECTOR, run_source, stage_regions

from anomalib_ncd.commands.detector_maps import DetectorSettings
from anomalib_ncd.data import generate_highres_small
from anomalib_ncd.regions.extract import ground_truth_regions

NORMAL_TYPE = "good"


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=10, help="normal images that train the detector (few: unsure)")
    parser.add_argument("--n-test-good", type=int, default=20)
    parser.add_argument("--n-per-type", type=int, default=20)
    parser.add_argument("--stages", default="current,soft,resolution,new")
    parser.add_argument("--sources", default="detector,gt")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--anchor", choices=("on", "off"), default=None, help="AnomalyNCD anchor (default: the model's)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/region_stage_synthetic"))
    args = parser.parse_args()
    # run_source reads these (shared with ncd_mtd.py)
    args.ablation, args.known_neu = False, 0
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    start = time.perf_counter()
    table = generate_highres_small(
        args.out / "data",
        n_train_good=args.n_train,
        n_test_good=args.n_test_good,
        n_per_type=args.n_per_type,
        seed=args.seed,
    )
    test = table[table["split"] == "test"].reset_index(drop=True)
    types = test["defect_type"].to_numpy()
    args.n_classes, args.normal_type = len(set(types)), NORMAL_TYPE
    image_paths = [str(path) for path in test["image_path"]]
    print(f"highres_small: {len(test)} test images {dict(test['defect_type'].value_counts())}, {args.n_train} train")
    report: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    report["generate_s"] = time.perf_counter() - start

    sources = [source.strip() for source in args.sources.split(",") if source.strip()]
    if "detector" in sources:
        detectors: dict[str, Any] = {}
        for stage in [name.strip() for name in args.stages.split(",") if name.strip()]:
            kind = STAGE_DETECTOR[stage]
            if kind not in detectors:
                settings = DetectorSettings(backbone="mobilenetv2_100.tv_in1k", **DETECTOR_INPUTS[kind])
                maps, times = patchcore_maps(table, test, args.out / kind, settings, "synthetic")
                detectors[kind] = maps
                report[f"detector_{kind}"] = times | detector_quality(maps, test)
                print(f"detector {kind}: {report[f'detector_{kind}']}")
            maps = detectors[kind]
            options = REGION_STAGES[stage]
            regions = stage_regions(maps, stage)
            score_maps = maps.aligned(long_side=None)
            report[f"detector/{stage}"] = run_source(
                f"detector/{stage}", regions, types, image_paths, score_maps, args, **options
            )
    if "gt" in sources:
        options = {"crops": REGION_STAGES["new"]["crops"]}
        gt = ground_truth_regions(test, crop_settings=options["crops"])
        report["gt"] = run_source("gt", gt, types, image_paths, gt.map_set.maps, args, **options)
    finish_report(report, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
