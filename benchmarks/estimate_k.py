"""Estimating the number of classes (``n_novel_classes: auto``): the estimate and what it costs, side by side.

For each set, one model is prepared (views cached once), the number of classes is estimated from
its region features (:func:`anomalib_ncd.estimate_class_count`, candidates 2..10), and the discovery
model is trained twice on the same cache from the same initial weights: with the estimated count and
with the true one (defect types + normal). Prints the estimate, the silhouette per candidate, and
image-level NMI / ARI / F1 with each count.

Sets: the built-in synthetic generator with 3 to 8 defect types (ground-truth regions: the count is
a property of the clustering, not of the detector), and MTD (true 6) with ground-truth regions and
with the detector regions of a finished ``discover`` run's saved maps (``--mtd-maps``).

Usage:
    python benchmarks/estimate_k.py [--epochs 50] [--mtd ../shared/datasets/mtd]
        [--mtd-maps results/NCD/MTD/all/latest/maps] [--skip-mtd]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
from _shared import fit_prepared

from anomalib_ncd import AnomalyNCD, ClassCountSettings, estimate_class_count, extract_regions, ground_truth_regions
from anomalib_ncd.data import generate_synthetic_dataset, load_mtd
from anomalib_ncd.data.synthetic_defects import DEFECT_TYPES
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.folder import load_map_folder

BACKBONE = "mobilenetv2_100.tv_in1k"
DEFAULT_MTD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mtd"


def train_and_score(model: AnomalyNCD, n_classes: int, truth: list[str], epochs: int, seed: int) -> dict:
    """Train a copy of the prepared model with ``n_classes`` and score its image classes."""
    pl.seed_everything(seed, verbose=False)
    trained = model.with_novel_classes(n_classes)
    fit_prepared(trained, epochs)
    found = trained.discover(n_images=len(truth))
    report = clustering_report(truth, found.classes)
    return {"k": n_classes, "nmi": report.nmi, "ari": report.ari, "f1": report.f1}


def run_set(name: str, regions: list, truth: list[str], args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    model = AnomalyNCD(
        n_novel_classes=10, backbone=BACKBONE, views={"n_views": args.n_views},
        training={"epochs": args.epochs}, seed=args.seed,
    )  # fmt: skip
    model.prepare(regions, progress=lambda _: None)
    estimate = estimate_class_count(model.region_features(), ClassCountSettings(), seed=args.seed)
    true_k = len(set(truth))
    with_estimate = train_and_score(model, estimate.n_classes, truth, args.epochs, args.seed)
    with_truth = (
        with_estimate if estimate.n_classes == true_k else train_and_score(model, true_k, truth, args.epochs, args.seed)
    )
    result = {
        "set": name, "true_k": true_k, "estimated_k": estimate.n_classes,
        "silhouette": dict(zip(estimate.candidates, [round(s, 4) for s in estimate.scores], strict=True)),
        "with_estimate": with_estimate, "with_true_k": with_truth, "seconds": time.perf_counter() - start,
    }  # fmt: skip
    print(
        f"{name:>22}: true K {true_k}, estimated {estimate.n_classes} | NMI/ARI/F1 with estimate "
        f"{with_estimate['nmi']:.3f}/{with_estimate['ari']:.3f}/{with_estimate['f1']:.3f}, with true K "
        f"{with_truth['nmi']:.3f}/{with_truth['ari']:.3f}/{with_truth['f1']:.3f} "
        f"(NMI change {with_estimate['nmi'] - with_truth['nmi']:+.3f}; {result['seconds']:.0f} s)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--mtd-maps", type=Path, default=Path("results/NCD/MTD/all/latest/maps"))
    parser.add_argument("--skip-mtd", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/estimate_k"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for n_types in range(3, 9):
            table = generate_synthetic_dataset(
                Path(workdir) / f"s{n_types}", "brick", image_size=(128, 176), n_train_good=1, n_test_good=10,
                n_per_type=10, defect_types=DEFECT_TYPES[:n_types], seed=args.seed,
            )  # fmt: skip
            test = table[table["split"] == "test"].reset_index(drop=True)
            regions = list(ground_truth_regions(test))
            results.append(run_set(f"synthetic, {n_types} types", regions, list(test["defect_type"]), args))
    if not args.skip_mtd and args.mtd.is_dir():
        table = load_mtd(args.mtd)
        test = table[table["split"] == "test"].reset_index(drop=True)
        truth = list(test["defect_type"])
        results.append(run_set("MTD, ground truth", list(ground_truth_regions(test)), truth, args))
        if (args.mtd_maps / "index.csv").is_file():
            regions = extract_regions(load_map_folder(args.mtd_maps, samples=test))
            results.append(run_set("MTD, detector", list(regions), truth, args))
    exact = sum(r["estimated_k"] == r["true_k"] for r in results)
    worst = min(r["with_estimate"]["nmi"] - r["with_true_k"]["nmi"] for r in results)
    print(f"exact K on {exact} of {len(results)} sets; worst NMI change from the true K: {worst:+.3f}")
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
