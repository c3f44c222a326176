"""Continual discovery on MTD: discover with 3 defect types first, then add a batch with the other 2.

Phase 1 trains on Free + Blowhole + Break + Crack (70% of each, seeded) with 4 classes. Phase 2 adds
a batch: the held-out 30% of those types plus every Fray and Uneven image
(:func:`anomalib_ncd.discovery.continual.add_batch`, default quantile 0.05, new classes estimated).
Regions come from the saved detector maps of a finished ``discover`` run (``--maps``).

Prints: how many classes were appended; the share of new-kind regions among the new types' and the
old types' anomalous regions; whether old-type images of the batch kept the class the phase-1 model
gave them; image-level NMI / ARI / F1 on the batch against the true types; the share of the batch's
old-type and new-type images marked unknown by the phase-1 model and by the extended model (whose
rejection is recalibrated on the phase-1 and the batch's regions together; ``--score`` picks the
unknown score).

Usage:
    python benchmarks/continual_mtd.py [--mtd ../shared/datasets/mtd] [--maps results/NCD/MTD/all/latest/maps]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from _shared import fit_prepared

from anomalib_ncd import AnomalyNCD, extract_regions, load_map_folder
from anomalib_ncd.data import load_mtd
from anomalib_ncd.data.image_io import read_image
from anomalib_ncd.discovery.continual import add_batch
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.io import atomic_write_text

DEFAULT_MTD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mtd"
FIRST = ("Free", "Blowhole", "Break", "Crack")
LATER = ("Fray", "Uneven")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--maps", type=Path, default=Path("results/NCD/MTD/all/latest/maps"))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", default="vmf", help="the model's unknown score (vmf, energy, msp, knn)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/continual_mtd"))
    args = parser.parse_args()
    start = time.perf_counter()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"].reset_index(drop=True)
    maps = load_map_folder(args.maps, samples=test)
    rng = np.random.default_rng(args.seed)
    types = np.array(maps.defect_types)
    first, batch = [], []
    for kind in FIRST:
        rows = rng.permutation(np.flatnonzero(types == kind))
        cut = round(0.7 * len(rows))
        first += sorted(rows[:cut].tolist())
        batch += sorted(rows[cut:].tolist())
    n_old_batch = len(batch)
    batch += np.flatnonzero(np.isin(types, LATER)).tolist()

    pl.seed_everything(args.seed, verbose=False)
    model = AnomalyNCD(
        n_novel_classes=len(FIRST), backbone="mobilenetv2_100.tv_in1k", views={"n_views": args.n_views},
        training={"epochs": args.epochs}, seed=args.seed, novelty={"score": args.score},
    )  # fmt: skip
    first_maps = maps.subset(first)
    model.prepare(extract_regions(first_maps), progress=lambda _: None)
    fit_prepared(model, args.epochs)
    phase1 = clustering_report(types[first].tolist(), model.discover(n_images=len(first)).classes)
    print(f"phase 1 ({', '.join(FIRST)}; {len(first)} images): {phase1}")

    batch_maps = maps.subset(batch)
    images = [read_image(path) for path in batch_maps.image_paths]
    before = model.classify_images(images, batch_maps.maps)
    # the phase-1 images classified: their regions set the new-kind threshold and, with the batch's,
    # recalibrate the extended model's unknown rejection
    earlier = model.classify_images([read_image(path) for path in first_maps.image_paths], first_maps.maps)
    update = add_batch(model, images, batch_maps.maps, earlier)
    batch_types = types[batch]
    region_types = batch_types[[region.image_index for region in update.classification.regions]]
    anomalous = ~np.array([region.whole_image for region in update.classification.regions])
    new_type = np.isin(region_types, LATER)
    kept = float(np.mean(update.classification.classes[:n_old_batch] == before.classes[:n_old_batch]))
    report = clustering_report(batch_types.tolist(), update.classification.classes)
    new_classes_of_new_types = np.isin(update.classification.region_classes[anomalous & new_type], update.new_classes)
    result = {
        "phase1": {"nmi": phase1.nmi, "ari": phase1.ari, "f1": phase1.f1, "images": len(first)},
        "appended_classes": len(update.new_classes),
        "threshold": update.threshold,
        "new_kind_rate_new_types": float(update.new_kind[anomalous & new_type].mean()),
        "new_kind_rate_old_types": float(update.new_kind[anomalous & ~new_type].mean()),
        "new_type_regions_in_new_classes": float(new_classes_of_new_types.mean()),
        "old_type_images_keep_class": kept,
        "unknown_before_add": {  # the phase-1 model's verdict on the batch's images
            "old_types": float(before.is_unknown[:n_old_batch].mean()),
            "new_types": float(before.is_unknown[n_old_batch:].mean()),
        },
        "unknown_after_add": {  # the extended model's, recalibrated on both sets
            "old_types": float(update.classification.is_unknown[:n_old_batch].mean()),
            "new_types": float(update.classification.is_unknown[n_old_batch:].mean()),
        },
        "batch": {"nmi": report.nmi, "ari": report.ari, "f1": report.f1, "images": len(batch)},
        "score": args.score,
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
