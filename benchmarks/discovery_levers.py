"""The discovery model against the strongest training-free baseline, one lever at a time, one run.

Regions are cut around the ground truth (perfect localisation), so only the model is measured:

* ``synthetic``: the generator's ``highres_small`` set (1024 x 768 colour, 4 types of 0.05-0.5% of
  the area, a third faint, 20 normal test images);
* ``mtd``: MTD's discovery split, ground-truth masks (5 defect types + Free);
* ``neu``: NEU-DET with its boxes as regions (6 types, no normal class), ``--neu-per-type`` images
  per type (the first by file name).

On each set the frozen views are cached once and every variant trains from the same seed on the
same cache:

* ``papers``: the CLS feature alone (``anchor=False``), ProtoAnomalyNCD's ``soft_rgf`` guidance;
* ``balanced (default)``: the CLS feature alone with size-independent ``balanced`` guidance;
* ``anchor``: the anchored feature (masked-pooled descriptor + a learned residual from zero), ``soft_rgf``;
* ``anchor + balanced``: both levers;
* ``anchor, untrained``: prototypes initialised, no epoch: the floor at initialisation.

Beside them, on the same plain-view tokens: masked pooling + k-means (and spherical k-means).
Prints image NMI / ARI / F1 and writes ``results.json``.

Usage:
    python benchmarks/discovery_levers.py [--sets synthetic,mtd,neu] [--epochs 50]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from _shared import finish_report, fit_prepared
from ncd_mtd import (
    DEFAULT_MTD,
    image_labels_of_regions,
    masked_pooling_kmeans,
    seeded_model,
)

from anomalib_ncd.data import generate_highres_small, load_mtd, load_neu_det
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.regions.extract import ground_truth_regions

VARIANTS: dict[str, dict[str, Any]] = {
    "papers": {"anchor": False, "guidance": {"mode": "soft_rgf"}},
    "balanced (default)": {"anchor": False, "guidance": {"mode": "balanced"}},
    "anchor": {"anchor": True, "guidance": {"mode": "soft_rgf"}},
    "anchor + balanced": {"anchor": True, "guidance": {"mode": "balanced"}},
}


def load_set(name: str, args: argparse.Namespace) -> tuple[Any, np.ndarray, str | None]:
    """The test table of a set, its image types and its normal type (``None``: no normal class)."""
    if name == "synthetic":
        table = generate_highres_small(
            args.out / "synthetic_data", n_train_good=10, n_test_good=20, n_per_type=20, seed=args.seed
        )
        test = table[table["split"] == "test"].reset_index(drop=True)
        return test, test["defect_type"].to_numpy(), "good"
    if name == "mtd":
        table = load_mtd(args.mtd)
        test = table[table["split"] == "test"].reset_index(drop=True)
        return test, test["defect_type"].to_numpy(), "Free"
    if name == "neu":
        table = load_neu_det(args.neu_det).sort_values("image_path")
        test = table.groupby("defect_type").head(args.neu_per_type).reset_index(drop=True)
        return test, test["defect_type"].to_numpy(), None
    raise SystemExit(f"unknown set {name!r}")


def report_of(types: np.ndarray, image_classes: np.ndarray) -> dict[str, float]:
    """Image-level NMI / ARI / F1."""
    return clustering_report(types, image_classes).as_dict()


def run_set(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant and the baselines on one set's ground-truth regions."""
    test, types, normal_type = load_set(name, args)
    args.n_classes = len(set(types))
    regions = ground_truth_regions(test)
    print(f"\n{name}: {len(test)} images, {len(regions)} regions, {args.n_classes} classes")
    normal = {"normal_class": normal_type is not None}
    results: dict[str, Any] = {"n_images": len(test), "n_regions": len(regions)}
    start = time.perf_counter()
    first = seeded_model(args, **normal)
    cache = first.prepare(list(regions))
    results["cache_s"] = time.perf_counter() - start
    for label, spherical in (("masked pooling + k-means", False), ("masked pooling + sph. k-means", True)):
        labels = masked_pooling_kmeans(cache, len(regions), args.n_classes, args.seed, spherical)
        results[label] = report_of(types, image_labels_of_regions(labels, regions, len(test)))
    wanted = [name.strip() for name in args.variants.split(";")]
    for variant, options in [("anchor, untrained", {"anchor": True}), *VARIANTS.items()]:
        if variant not in wanted:
            continue
        model = seeded_model(args, **normal, **options)
        model.cache, model.labels, model.n_unlabeled = first.cache, first.labels, first.n_unlabeled
        start = time.perf_counter()
        if variant.endswith("untrained"):
            model.on_fit_start()  # the prototypes from the initial features, as training starts
        else:
            fit_prepared(model, args.epochs)
        found = model.discover(n_images=len(test))
        results[variant] = report_of(types, found.classes) | {"train_s": time.perf_counter() - start}
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"  {key:<30} NMI {value['nmi']:.3f}  ARI {value['ari']:.3f}  F1 {value['f1']:.3f}")
    return results


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="synthetic,mtd,neu")
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--neu-det", type=Path, default=DEFAULT_MTD.parent / "neu-det")
    parser.add_argument("--neu-per-type", type=int, default=40)
    parser.add_argument(
        "--variants", default=";".join(["anchor, untrained", *VARIANTS]), help="';'-separated variant names"
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-views", type=int, default=4, help="augmented views cached per region")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/discovery_levers"))
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    report: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    for name in [item.strip() for item in args.sets.split(",") if item.strip()]:
        report[name] = run_set(name, args)
    finish_report(report, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
