"""Throughput of ``predict``: images per second, discovery stage alone and end to end with the detector.

The discovery stage is what ``anomalib-ncd predict`` does once the maps exist: read the image,
binarise its raw map with the fitted MEBin, cut regions, run the discovery network (frozen backbone
+ trained tail) on each region's plain view, fuse to an image class. End to end adds the detector
(anomalib ``Engine.predict`` of Patchcore, raw maps collected).

Data: MTD's discovery set (582 images, 100-630 px strips) when ``--mtd`` exists, else the built-in
synthetic set. The discovery model is trained for one epoch only (speed does not depend on how well
it is trained); CPU profile (MobileNetV2 tokens + one guided block). Each measurement is repeated
``--repeats`` times after a warm-up pass; the best and median are printed, with the ratio to the
30 images/s goal.

Usage:
    python benchmarks/predict_speed.py [--mtd ../shared/datasets/mtd] [--images 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from anomalib_ncd import AnomalyNCD, DefectDiscovery
from anomalib_ncd.commands.detector_maps import input_size
from anomalib_ncd.data import generate_synthetic_dataset, load_mtd, to_anomalib_datamodule
from anomalib_ncd.data.mtd import cap_detector_training
from anomalib_ncd.detector import make_patchcore, train_detector
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.from_anomalib import load_anomalib_model, predict_maps

GOAL = 30.0
DEFAULT_MTD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mtd"
MTD_DETECTOR = Path("results/benchmarks/detector_mtd/Patchcore/MTD/latest/weights/lightning/model.ckpt")


def timed(function, repeats: int) -> list[float]:  # noqa: ANN001
    function()  # warm-up: lazy imports, allocator, OpenCV thread pools
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--images", type=int, default=200, help="images per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/predict_speed"))
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    work = Path(tempfile.mkdtemp(prefix="predict_speed_"))

    if args.mtd.is_dir():
        dataset = "MTD"
        table = load_mtd(args.mtd)
        if MTD_DETECTOR.is_file():
            detector = load_anomalib_model(MTD_DETECTOR)
        else:
            detector = make_patchcore("mobilenetv2_100.tv_in1k")
            capped = cap_detector_training(table, 200)
            train_detector(detector, to_anomalib_datamodule(capped, "MTD", image_size=256), root_dir=work, max_epochs=1)
    else:
        dataset = "synthetic"
        table = generate_synthetic_dataset(work / "data", "brick", image_size=(256, 384), n_per_type=40)
        detector = make_patchcore("mobilenetv2_100.tv_in1k")
        datamodule = to_anomalib_datamodule(table, "synthetic", image_size=256)
        train_detector(detector, datamodule, root_dir=work, max_epochs=1)
    test = table[table["split"] == "test"].reset_index(drop=True).iloc[: args.images]
    datamodule = to_anomalib_datamodule(test, dataset, image_size=input_size(detector) or 256, eval_batch_size=32)
    maps = predict_maps(detector, datamodule, samples=test, accelerator="cpu", devices=1, enable_progress_bar=False)

    model = AnomalyNCD(
        n_novel_classes=6, backbone="mobilenetv2_100.tv_in1k", training={"epochs": 1}, views={"n_views": 2}
    )
    discovery = DefectDiscovery(model, accelerator="cpu", root_dir=work, progress=False).fit(maps)
    n = len(maps)

    def discovery_stage() -> None:
        discovery.classify(maps, batch_size=args.batch_size)

    def end_to_end() -> None:
        new_maps = predict_maps(
            detector, datamodule, samples=test, accelerator="cpu", devices=1, enable_progress_bar=False
        )
        discovery.classify(new_maps, batch_size=args.batch_size)

    results = {"dataset": dataset, "images": n, "threads": torch.get_num_threads()}
    for name, function in (("discovery_stage", discovery_stage), ("end_to_end", end_to_end)):
        seconds = timed(function, args.repeats)
        best, median = n / min(seconds), n / statistics.median(seconds)
        results[name] = {"images_per_s_best": round(best, 1), "images_per_s_median": round(median, 1)}
        print(
            f"{name:>16}: {median:6.1f} images/s median, {best:6.1f} best ({n} images, {dataset}); "
            f"median / goal {median / GOAL:.2f}"
        )
    results["regions_per_image"] = round(len(discovery.regions_) / n, 2)
    print(f"regions per image: {results['regions_per_image']}")
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
