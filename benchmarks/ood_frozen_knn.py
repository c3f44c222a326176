"""Where does unknown rejection on MTD fail: the regions or the model? A training-free diagnostic.

``ood_mtd.py`` measures the model's unknown scores, which come after discovery training. This script
asks what the frozen features alone can do, with no training: for the same leave-one-type-out folds
and the same split by physical defect, each test region's unknown score is its cosine distance to
the ``k``-th nearest training region (Sun et al., 2022) in the frozen CPU-profile token space
(MobileNetV2 ImageNet tokens, the plain view), image scores are fused with the model's area weights,
and the AUROC of left-out against seen test images is reported, for

* the regions: the detector's (MEBin on the saved Patchcore maps) or the ground-truth masks;
* the pooling of a region's tokens: inside the anomaly mask only (``mask``), the model's soft
  guidance with ``rho = 0.1`` outside it (``guided``), or all tokens (``mean``).

MEBin's range is fitted once on all maps here (``ood_mtd.py`` fits it on each fold's training
maps), a small difference for a diagnostic. Images without a region are left out of the AUROC.

Usage:
    python benchmarks/ood_frozen_knn.py [--maps results/NCD/MTD/all/latest/maps] [--k 1,5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from ood_mtd import DEFAULT_MAPS, DEFAULT_MTD, DEFECT_TYPES, physical_groups, seeded_split
from sklearn.metrics import roc_auc_score

from anomalib_ncd import AnomalyNCD, extract_regions, ground_truth_regions
from anomalib_ncd.data import load_mtd
from anomalib_ncd.discovery.novelty import anomaly_pooled, fused_image_scores
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.folder import load_map_folder

FUSION_TEMPERATURE = 50.0  # the model's default for MTD
RHO = 0.1  # the model's soft guidance outside the anomaly


def pooled_region_features(
    regions: list, seed: int
) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray, np.ndarray]:
    """Frozen plain-view tokens of every region, pooled three ways; and whole-image flags, images, areas."""
    pl.seed_everything(seed, verbose=False)
    model = AnomalyNCD(n_novel_classes=2, backbone="mobilenetv2_100.tv_in1k", views={"n_views": 2}, seed=seed)
    model.prepare(regions, progress=lambda _: None)
    cache = model.cache
    assert cache is not None
    end = model.n_unlabeled
    coverage = cache.anomaly[:end, 0].float()
    tokens = cache.tokens[:end, 0, -coverage.shape[1] :].float()  # patch tokens (a ViT also has a CLS first)

    def weighted(weights: torch.Tensor) -> torch.Tensor:
        return (tokens * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-6)

    features = {
        "mask": anomaly_pooled(cache.tokens[:end, 0], coverage),  # the model's knn descriptor
        "guided": weighted(coverage + (1 - coverage) * RHO),
        "mean": tokens.mean(1),
    }
    return (
        features,
        cache.whole_image[:end].numpy(),
        cache.image_index[:end].numpy(),
        cache.areas[:end].numpy().astype(np.float64),
    )


def fold_auroc(
    features: torch.Tensor,
    whole: np.ndarray,
    image_index: np.ndarray,
    areas: np.ndarray,
    types: np.ndarray,
    is_train: np.ndarray,
    held_out: str,
    k: int,
) -> float:
    """Image AUROC of the kNN unknown score, ``held_out`` test images against seen test images."""
    unit = torch.nn.functional.normalize(features, dim=1).numpy()
    left_out = types == held_out
    train_images, test_images = is_train & ~left_out, ~is_train | left_out
    train_regions = train_images[image_index] & ~whole
    test_regions = test_images[image_index] & ~whole
    similarity = unit[test_regions] @ unit[train_regions].T
    scores = np.full(len(image_index), np.nan, dtype=np.float32)
    scores[test_regions] = 1.0 - np.sort(similarity, axis=1)[:, -min(k, int(train_regions.sum()))]
    fused = fused_image_scores(scores, areas, image_index, len(types), FUSION_TEMPERATURE)
    rows = np.flatnonzero(test_images & np.isfinite(fused))
    return float(roc_auc_score(left_out[rows], fused[rows]))


def main() -> None:
    """Run the diagnostic."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--maps", type=Path, default=DEFAULT_MAPS, help="saved raw Patchcore maps (index.csv)")
    parser.add_argument("--k", default="1,5", help="comma-separated neighbour ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/ood_frozen_knn"))
    args = parser.parse_args()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"].reset_index(drop=True)
    maps = load_map_folder(args.maps, samples=test)
    types = np.array(maps.defect_types)
    is_train = seeded_split(types, physical_groups(maps.image_paths, types), 0.7, args.seed)
    sources = {
        "detector": lambda: list(extract_regions(maps, progress=lambda _: None)),
        "ground truth": lambda: list(ground_truth_regions(test)),
    }
    results = []
    for source, make_regions in sources.items():
        features, whole, image_index, areas = pooled_region_features(make_regions(), args.seed)
        for k in (int(value) for value in args.k.split(",")):
            for pooling, values in features.items():
                aurocs = {
                    held_out: fold_auroc(values, whole, image_index, areas, types, is_train, held_out, k)
                    for held_out in DEFECT_TYPES
                }
                mean = float(np.mean(list(aurocs.values())))
                results.append({"regions": source, "k": k, "pooling": pooling, "auroc": aurocs, "mean": mean})
                folds = " ".join(f"{name} {value:.3f}" for name, value in aurocs.items())
                print(f"{source:>12}, k={k}, {pooling:>6} pooling: {folds} | mean {mean:.3f}", flush=True)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
