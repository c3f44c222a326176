"""Unknown-class rejection on MTD: leave one defect type out of discovery, present it at predict time.

Protocol, for each of MTD's 5 defect types (Blowhole, Break, Crack, Fray, Uneven):

* every other type, Free included, is split 70/30 per type (seeded, the same split in every fold)
  by *physical defect*: MTD photographs each defect under 6 lightings (``exp1..exp6``, consecutive
  ``num`` ids), so an image-level split would put near-copies of a test defect in the training set
  and make seen test images look familiar. :func:`physical_groups` recovers the groups from the file
  names; ``--split image`` gives the image-level split for comparison;
* discovery (:class:`~anomalib_ncd.AnomalyNCD`, CPU profile, 5 classes: the 4 seen types + Free)
  runs on the 70 % parts, from MEBin regions of the saved Patchcore maps
  (``results/NCD/MTD/all/latest/maps``; MEBin is fitted on the training maps only); the model
  calibrates its unknown thresholds on its training regions (5 % false rejection by default);
* prediction (:meth:`~anomalib_ncd.AnomalyNCD.classify_images`) runs on the 30 % seen parts (images
  the model never saw) and on every image of the left-out type.

Reported per left-out type, for each candidate unknown score (the model's own: ``vmf``, the default,
``energy``, ``msp`` and ``knn``, :mod:`anomalib_ncd.discovery.novelty`; as references the model does
not offer: ``vmf_class``, the best cosine standardised per class, and ``knn_learned``, the cosine
distance to the 5th nearest training region in the *learned* feature space):

* AUROC of the unknown score, left-out type (positive) against seen types (negative), at image level
  (fused score, images where the detector found a region; ``all``: every image, nothing-found ones
  ranked least unknown, as the model never rejects them) and at region level (a region counts as
  left-out when its image is);
* at the score's threshold calibrated on the training regions only: the share of left-out images
  rejected, of seen test images rejected (false rejection) and of training images rejected;
* the Hungarian-matched accuracy on the seen test images, without rejection and at the threshold
  (a rejected seen image counts as an error);
* how many images of each side had no detector region (classified normal, never unknown).

No setting is chosen with the left-out type's labels; thresholds come from training regions only.

Usage:
    python benchmarks/ood_mtd.py [--epochs 50] [--n-views 4] [--types Blowhole,Crack]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from _shared import fit_prepared
from sklearn.metrics import roc_auc_score

from anomalib_ncd.data import load_mtd
from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.discovery.novelty import (
    PROTOTYPE_SCORES,
    calibrate,
    fused_image_scores,
    knn_scores,
    unknown_scores,
)
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.maps.folder import load_map_folder
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.regions.extract import extract_regions, read_set_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MTD = ROOT.parent / "shared" / "datasets" / "mtd"
DEFAULT_MAPS = ROOT / "results" / "NCD" / "MTD" / "all" / "latest" / "maps"
DEFECT_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
NORMAL_TYPE = "Free"
CPU_BACKBONE = "mobilenetv2_100.tv_in1k"
KNN_K = 5
CANDIDATES = (*PROTOTYPE_SCORES, "knn", "vmf_class", "knn_learned")


def physical_groups(image_paths: list[str], types: np.ndarray, max_gap: int = 1000) -> np.ndarray:
    """Group id of each image: the images of one physical defect under MTD's lightings.

    Within a type, images sorted by their ``num`` id; a group ends when a lighting (``expN``) repeats
    or the next id is more than ``max_gap`` away. Defect types come out as groups of (mostly) 6.
    """
    keys = []
    for path in image_paths:
        name = Path(path).name
        number, lighting = re.search(r"num_(\d+)", name), re.search(r"exp(\d+)", name)
        keys.append((int(number.group(1)) if number else 0, int(lighting.group(1)) if lighting else -1))
    groups = np.zeros(len(image_paths), dtype=np.int64)
    next_group = 0
    for name in sorted(set(types)):
        members = sorted(np.flatnonzero(types == name), key=lambda row: keys[row])
        lightings: set[int] = set()
        previous = None
        for row in members:
            number, lighting = keys[row]
            if previous is not None and (lighting in lightings or number - previous > max_gap):
                next_group, lightings = next_group + 1, set()
            groups[row], previous = next_group, number
            lightings.add(lighting)
        next_group += 1
    return groups


def seeded_split(types: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``True`` for the training part of each type: ``round(fraction * n)`` of its ``n`` groups, seeded."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(types), dtype=bool)
    for name in sorted(set(types)):
        members = np.unique(groups[types == name])
        chosen = rng.permutation(members)[: round(fraction * len(members))]
        train[np.isin(groups, chosen)] = True
    return train


def best_head_cosines(model: AnomalyNCD, features: np.ndarray) -> np.ndarray:
    """``(R, K)`` cosines of features to the prototypes of the model's best head."""
    with torch.no_grad():
        cosines = model.network.heads(torch.as_tensor(features, dtype=torch.float32))[int(model.best_head)]
    return cosines.numpy()


def class_statistics(cosines: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``(K, 2)`` mean and spread of the best cosine of the training regions nearest each class.

    Classes with fewer than 3 such regions take the statistics of all training regions.
    """
    best, nearest, kept = cosines.max(1), cosines.argmax(1), ~whole
    stats = np.tile([best[kept].mean(), max(best[kept].std(), 1e-3)], (cosines.shape[1], 1))
    for k in range(cosines.shape[1]):
        values = best[kept & (nearest == k)]
        if len(values) >= 3:
            stats[k] = values.mean(), max(values.std(), 1e-3)
    return stats


def candidate_scores(
    model: AnomalyNCD,
    features: np.ndarray,
    descriptors: torch.Tensor,
    reference: tuple[np.ndarray, torch.Tensor],
    stats: np.ndarray,
    own: bool,
) -> dict[str, Any]:
    """Every candidate's region scores.

    ``reference`` holds the training regions' learned features (all of them) and frozen descriptors
    (found regions only, as the model's bank); ``own``: the regions are those training regions (a
    region is not its own neighbour).
    ``vmf_class`` is the best cosine standardised by its nearest class's training statistics ``stats``
    (a concentration per class instead of the shared ``kappa``).
    """
    cosines = best_head_cosines(model, features)
    temperature = model.loss_weights.student_temperature
    scores = {name: unknown_scores(cosines, name, temperature) for name in PROTOTYPE_SCORES}
    scores["knn"] = knn_scores(descriptors, reference[1], model.novelty_settings.k, skip_self=own)
    nearest = cosines.argmax(1)
    scores["vmf_class"] = (-(cosines.max(1) - stats[nearest, 0]) / stats[nearest, 1]).astype(np.float32)
    scores["knn_learned"] = knn_scores(torch.from_numpy(features), torch.from_numpy(reference[0]), KNN_K, own)
    return scores


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of ``scores`` for ``positive``; NaN when one side is empty."""
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def run_fold(held_out: str, maps: AnomalyMapSet, is_train: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Discover without ``held_out``, then score its images and the seen test images."""
    types = np.array(maps.defect_types)
    left_out = types == held_out
    train_rows = np.flatnonzero(is_train & ~left_out)
    test_rows = np.flatnonzero(~is_train | left_out)
    start = time.perf_counter()
    train_set = maps.subset(list(train_rows))
    regions = extract_regions(train_set, progress=lambda _: None)
    pl.seed_everything(args.seed, verbose=False)
    model = AnomalyNCD(
        n_novel_classes=len(DEFECT_TYPES),  # the 4 seen types + Free
        backbone=CPU_BACKBONE,
        views={"n_views": args.n_views},
        training={"epochs": args.epochs},
        novelty={"quantile": args.quantile, "score": args.score},
        seed=args.seed,
    )
    model.prepare(regions, progress=lambda _: None)
    cache_s = time.perf_counter() - start
    train_s = fit_prepared(model, args.epochs)

    # training side: the thresholds of every candidate come from these regions only
    found_train = model.discover(n_images=len(train_rows))
    cache = model.cache
    assert cache is not None
    end = model.n_unlabeled
    whole_train = cache.whole_image[:end].numpy()
    areas_train = cache.areas[:end].numpy()
    index_train = cache.image_index[:end].numpy()
    train_features = found_train.region_features
    stats = class_statistics(best_head_cosines(model, train_features), whole_train)
    train_descriptors = torch.from_numpy(model.region_descriptors())
    reference = (train_features, train_descriptors[~torch.from_numpy(whole_train)])
    train_scores = candidate_scores(model, train_features, train_descriptors, reference, stats, own=True)
    thresholds = {
        name: calibrate(values, whole_train, areas_train, index_train, model.fusion_temperature, args.quantile)
        for name, values in train_scores.items()
    }

    # test side: new images through the whole predict path
    start = time.perf_counter()
    test_set = maps.subset(list(test_rows))
    images = [read_set_image(test_set, index) for index in range(len(test_set))]
    found = model.classify_images(images, test_set.maps)
    predict_s = time.perf_counter() - start
    test_types = types[test_rows]
    positive = test_types == held_out
    whole = np.array([region.whole_image for region in found.regions])
    image_index = np.array([region.image_index for region in found.regions])
    areas = np.array([region.area for region in found.regions], dtype=float)
    has_region = np.bincount(image_index[~whole], minlength=len(test_rows)) > 0
    region_positive = positive[image_index[~whole]]
    test_descriptors = torch.from_numpy(found.region_descriptors)
    scores = candidate_scores(model, found.region_features, test_descriptors, reference, stats, own=False)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(  # everything needed to score the fold again without training
        args.out / f"fold_{held_out}.npz",
        train_features=train_features,
        train_cosines=best_head_cosines(model, train_features),
        train_whole=whole_train,
        train_areas=areas_train,
        train_image_index=index_train,
        train_types=types[train_rows],
        test_features=found.region_features,
        test_cosines=best_head_cosines(model, found.region_features),
        test_whole=whole,
        test_areas=areas,
        test_image_index=image_index,
        test_types=test_types,
        test_classes=found.classes,
        test_is_unknown=found.is_unknown,
    )

    seen = ~positive
    seen_report = clustering_report(test_types[seen], found.classes[seen])
    mapping = seen_report.mapping
    correct = np.array([mapping.get(c) == t for c, t in zip(found.classes[seen], test_types[seen], strict=True)])

    per_score: dict[str, Any] = {}
    for name, values in scores.items():
        region_values = values.astype(np.float32).copy()
        region_values[whole] = np.nan
        fused = fused_image_scores(region_values, areas, image_index, len(test_rows), model.fusion_temperature)
        largest = np.full(len(test_rows), np.nan, dtype=np.float32)
        for row in np.flatnonzero(~whole)[::-1]:  # regions come largest first: the first one wins
            largest[image_index[row]] = region_values[row]
        all_images = np.where(np.isnan(fused), np.nanmin(fused) - 1.0, fused)  # nothing found: least unknown
        region_threshold, image_threshold = thresholds[name]
        rejected = has_region & (fused > image_threshold)
        train_fused = fused_image_scores(
            np.where(whole_train, np.nan, train_scores[name]),
            areas_train,
            index_train,
            len(train_rows),
            model.fusion_temperature,
        )
        if name == model.novelty_settings.score:  # the model's own decisions are the ones measured here
            assert np.array_equal(found.is_unknown, rejected)
        per_score[name] = {
            "auroc_image": auroc(positive[has_region], fused[has_region]),
            "auroc_image_all": auroc(positive, all_images),
            "auroc_image_largest": auroc(positive[has_region], largest[has_region]),
            "auroc_region": auroc(region_positive, values[~whole]),
            "threshold": [region_threshold, image_threshold],
            "held_out_rejected": float(rejected[positive].mean()),
            "held_out_rejected_with_region": float(rejected[positive & has_region].mean()),
            "seen_rejected": float(rejected[seen].mean()),
            "seen_rejected_with_region": float(rejected[seen & has_region].mean()),
            "train_images_rejected": float((train_fused[np.isfinite(train_fused)] > image_threshold).mean()),
            "train_regions_rejected": float((train_scores[name][~whole_train] > region_threshold).mean()),
            "seen_accuracy_at_threshold": float((correct & ~rejected[seen]).mean()),
        }
    return {
        "held_out": held_out,
        "n_train_images": len(train_rows),
        "n_train_regions": int((~whole_train).sum()),
        "n_test_seen": int(seen.sum()),
        "n_test_held_out": int(positive.sum()),
        "no_region_seen": int((seen & ~has_region).sum()),
        "no_region_held_out": int((positive & ~has_region).sum()),
        "seen_accuracy": float(correct.mean()),
        "seen_clustering": {"nmi": seen_report.nmi, "ari": seen_report.ari, "f1": seen_report.f1},
        "model_unknown_seen": float(found.is_unknown[seen].mean()),
        "model_unknown_held_out": float(found.is_unknown[positive].mean()),
        "model_threshold": [float(model.unknown_threshold), float(model.unknown_image_threshold)],
        "scores": per_score,
        "cache_s": cache_s,
        "train_s": train_s,
        "predict_s": predict_s,
    }


def print_fold(result: dict[str, Any]) -> None:
    """One fold's line per candidate score."""
    print(
        f"\nleft out {result['held_out']}: train {result['n_train_images']} images / {result['n_train_regions']} "
        f"regions; test {result['n_test_seen']} seen ({result['no_region_seen']} without region) + "
        f"{result['n_test_held_out']} left-out ({result['no_region_held_out']} without region); "
        f"seen accuracy {result['seen_accuracy']:.3f}; {result['cache_s'] + result['train_s']:.0f} s"
    )
    print(f"  {'score':<10} AUROC img  img(all)  img(lgst)  region   reject left-out  seen  train   acc@thr")
    for name, values in result["scores"].items():
        print(
            f"  {name:<10} {values['auroc_image']:>9.3f} {values['auroc_image_all']:>9.3f} "
            f"{values['auroc_image_largest']:>10.3f} {values['auroc_region']:>7.3f} "
            f"{values['held_out_rejected']:>16.3f} {values['seen_rejected']:>5.3f} "
            f"{values['train_images_rejected']:>6.3f} {values['seen_accuracy_at_threshold']:>9.3f}"
        )


def summary(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the folds, per candidate score."""
    keys = (
        "auroc_image",
        "auroc_image_all",
        "auroc_image_largest",
        "auroc_region",
        "held_out_rejected",
        "seen_rejected",
        "train_images_rejected",
        "seen_accuracy_at_threshold",
    )
    means: dict[str, Any] = {
        name: {key: float(np.nanmean([fold["scores"][name][key] for fold in folds])) for key in keys}
        for name in CANDIDATES
    }
    means["seen_accuracy"] = float(np.mean([fold["seen_accuracy"] for fold in folds]))
    return means


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument("--maps", type=Path, default=DEFAULT_MAPS, help="saved raw Patchcore maps (index.csv)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-views", type=int, default=4, help="augmented views cached per region")
    parser.add_argument("--quantile", type=float, default=0.05, help="false-rejection rate on training regions")
    parser.add_argument("--score", default="vmf", help="the model's own unknown score (its decisions are checked)")
    parser.add_argument("--train-fraction", type=float, default=0.7)
    parser.add_argument("--split", choices=("group", "image"), default="group", help="split by physical defect")
    parser.add_argument("--types", default=",".join(DEFECT_TYPES), help="comma-separated types to leave out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/ood_mtd"))
    args = parser.parse_args()
    if not args.mtd.is_dir():
        raise SystemExit(f"MTD not found at {args.mtd}")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    start = time.perf_counter()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"].reset_index(drop=True)
    maps = load_map_folder(args.maps, samples=test)
    types = np.array(maps.defect_types)
    groups = physical_groups(maps.image_paths, types) if args.split == "group" else np.arange(len(types))
    is_train = seeded_split(types, groups, args.train_fraction, args.seed)
    counts = {str(name): int(count) for name, count in zip(*np.unique(types, return_counts=True), strict=True)}
    print(f"MTD discovery set: {len(maps)} images {counts}, {len(np.unique(groups))} {args.split} groups")
    report: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    folds = []
    for held_out in [name.strip() for name in args.types.split(",") if name.strip()]:
        if held_out not in DEFECT_TYPES:
            raise SystemExit(f"unknown defect type {held_out!r}")
        folds.append(run_fold(held_out, maps, is_train, args))
        print_fold(folds[-1])
        report["folds"] = folds
        report["mean"] = summary(folds)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.json", json.dumps(report, indent=2))
    report["total_s"] = time.perf_counter() - start
    atomic_write_text(args.out / "results.json", json.dumps(report, indent=2))
    means = report["mean"]
    print(f"\nmean over {len(folds)} left-out types (seen accuracy without rejection {means['seen_accuracy']:.3f}):")
    for name in CANDIDATES:
        values = means[name]
        print(
            f"  {name:<10} AUROC image {values['auroc_image']:.3f} (all {values['auroc_image_all']:.3f}, largest "
            f"{values['auroc_image_largest']:.3f}), region {values['auroc_region']:.3f}; rejected: left-out "
            f"{values['held_out_rejected']:.3f}, seen {values['seen_rejected']:.3f}; "
            f"accuracy at threshold {values['seen_accuracy_at_threshold']:.3f}"
        )
    print(f"total {report['total_s']:.0f} s")


if __name__ == "__main__":
    main()
