"""Defect-class discovery on MTD: AnomalyNCD (ours) against k-means and Anomaly Clustering, side by side.

Protocol (AnomalyNCD's): 6 classes, the 5 defect types and Free. The discovery set is every defect
image plus the Free images held back from the detector (582 images,
:func:`anomalib_ncd.data.load_mtd`). The detector is anomalib's Patchcore on MobileNetV2 with real
ImageNet weights, trained as ``anomalib-ncd discover`` trains it, on all 762 detector Free images
(``--max-train`` caps them); checkpoints are kept under ``--detector-root`` and reused.

Two region sources are compared:

* ``detector``: regions of the detector's anomaly maps (the real pipeline), with each region stage of
  ``--stages`` side by side (:data:`REGION_STAGES`, ``docs/region_stage.md``): ``current`` (main's:
  Patchcore input squashed to 256 x 256, MEBin at 256, nothing found = normal, crops of at least 20%
  of the image), ``new`` (letterboxed input at a side chosen from the images, MEBin at the map's own
  resolution, the soft path, crops in units of the defect), and ``soft`` / ``resolution`` alone;
* ``gt``: regions cut around the ground-truth masks (perfect localisation, the upper bound).

Methods, all with the same frozen backbone (MobileNetV2, ImageNet) and the same regions:

* ``ours``: :class:`anomalib_ncd.AnomalyNCD` (CPU profile), image classes by area-weighted fusion;
* ``kmeans``: k-means (k = 6) of the mean-pooled frozen features of each region's crop, fused the
  same way;
* ``masked pooling + k-means`` (and spherical k-means): the frozen tokens averaged inside the
  region's anomaly mask, the strongest training-free method, fused the same way;
* ``anomaly_clustering``: Sohn et al.: each whole image is a bag of frozen patch features, pooled
  with softmax weights of its patch anomaly scores (the detector's map, or the ground-truth mask in
  the ``gt`` setting) at the fixed temperature rule of :class:`~anomalib_ncd.baselines.AnomalyClustering`
  (the standard deviation of the set's patch scores), then Ward clustering into 6 clusters.

Every setting is a documented default; none is chosen by looking at MTD's labels. Prints NMI / ARI / F1
(Hungarian-matched accuracy) at image level (and region level for the region methods), the time of each
stage, training time per epoch and peak memory; writes ``results.json``. ``--ablation`` adds the
guidance ablation (none / hard / soft / soft + region factor) on the same cached views.

Usage:
    python benchmarks/ncd_mtd.py [--mtd ../shared/datasets/mtd] [--stages current,soft,resolution,new] [--ablation]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from _shared import detector_quality, finish_report, fit_prepared, patchcore_maps

from anomalib_ncd.baselines import AnomalyClustering, KMeansBaseline
from anomalib_ncd.commands.detector_maps import DetectorSettings
from anomalib_ncd.data import load_mtd, load_neu_det
from anomalib_ncd.data.image_io import read_image
from anomalib_ncd.discovery.fusion import fuse_regions
from anomalib_ncd.discovery.guidance import pool_to_patches
from anomalib_ncd.discovery.known_classes import known_class_regions
from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.discovery.novelty import anomaly_pooled
from anomalib_ncd.discovery.views import ViewMaker
from anomalib_ncd.evaluation import clustering_report
from anomalib_ncd.regions.crops import CropSettings
from anomalib_ncd.regions.extract import RegionSet, extract_regions, ground_truth_regions

DEFAULT_MTD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mtd"
DETECTOR_ROOT = Path("results/benchmarks/detector_mtd")
N_CLASSES = 6
CPU_BACKBONE = "mobilenetv2_100.tv_in1k"
GUIDANCE_MODES = ("none", "hard", "soft", "soft_rgf")
# region stages compared on the same detector maps: what an image without a MEBin region gets, how
# crops are sized, MEBin's working resolution (``auto``: the map's own)
REGION_STAGES: dict[str, dict[str, Any]] = {
    "current": {"nothing_found": "normal", "crops": CropSettings(sizing="image"), "working_long_side": 256},
    "soft": {"nothing_found": "soft", "crops": CropSettings(sizing="image"), "working_long_side": 256},
    "resolution": {"nothing_found": "normal", "crops": CropSettings(), "working_long_side": "auto"},
    "new": {"nothing_found": "soft", "crops": CropSettings(), "working_long_side": "auto"},
}
# the detector input of each stage: squashed to 256 x 256 (the papers', main's) or letterboxed at a side
# chosen from the images (the new stage); both Patchcores train on the same images
STAGE_DETECTOR = {"current": "squash", "soft": "squash", "resolution": "letterbox", "new": "letterbox"}
DETECTOR_INPUTS = {
    "squash": {"image_size": 256, "letterbox": False},
    "letterbox": {"image_size": "auto", "letterbox": True},
}


def stage_regions(maps: Any, stage: str, load_crops: bool = True) -> RegionSet:
    """The regions one region stage (:data:`REGION_STAGES`) cuts from a detector's maps."""
    options = REGION_STAGES[stage]
    return extract_regions(
        maps,
        crop_settings=options["crops"],
        working_long_side=options["working_long_side"],
        nothing_found=options["nothing_found"],
        load_crops=load_crops,
    )


def detector_maps(args: argparse.Namespace, table: Any, test: Any, kind: str) -> tuple[Any, dict[str, float]]:
    """The maps of one detector input kind (``squash`` or ``letterbox``), its checkpoint reused when present."""
    settings = DetectorSettings(
        backbone=CPU_BACKBONE,
        coreset_sampling_ratio=0.01,
        max_train_images=args.max_train or None,
        **DETECTOR_INPUTS[kind],
    )
    maps, times = patchcore_maps(table, test, args.detector_root / kind, settings, "MTD")
    return maps, times | detector_quality(maps, test)


def image_labels_of_regions(region_labels: np.ndarray, regions: RegionSet, n_images: int) -> np.ndarray:
    """Image classes from hard region labels, fused with AnomalyNCD's area weights."""
    areas = np.array([region.area for region in regions], dtype=float)
    image_index = np.array([region.image_index for region in regions])
    one_hot = np.eye(int(region_labels.max()) + 1)[region_labels]
    return fuse_regions(one_hot, areas, image_index, n_images, temperature=50.0).argmax(1)


def whole_image_tokens(model: AnomalyNCD, image_paths: list[str]) -> torch.Tensor:
    """Frozen patch tokens of whole images (plain views), for Anomaly Clustering."""
    maker = ViewMaker(model.view_settings)
    backbone = model.model.backbone
    chunks = []
    for start in range(0, len(image_paths), 32):
        views = [maker.plain(read_image(path), np.zeros((1, 1), bool))[0] for path in image_paths[start : start + 32]]
        dummy = torch.zeros(len(views), backbone.grid[0] * backbone.grid[1])
        chunks.append(backbone.frozen(torch.stack(views), dummy).float())
    return torch.cat(chunks)


def patch_scores(score_maps: list[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """Mean of each score map over each patch of the (squashed) whole-image view."""
    pooled = []
    for score_map in score_maps:
        tensor = torch.from_numpy(np.asarray(score_map, dtype=np.float32))[None]
        pooled.append(pool_to_patches(tensor, grid)[0].numpy())
    return np.stack(pooled)


def masked_pooling_kmeans(cache: Any, n_regions: int, n_classes: int, seed: int, spherical: bool = False) -> np.ndarray:
    """The strongest training-free baseline: frozen tokens averaged inside the anomaly mask, then k-means.

    ``spherical``: the descriptors are L2-normalised first (k-means on the sphere, cosine geometry).
    """
    descriptors = anomaly_pooled(cache.tokens[:n_regions, 0], cache.anomaly[:n_regions, 0]).numpy()
    if spherical:
        descriptors = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
    return KMeansBaseline(n_classes, seed=seed).fit_predict(descriptors)


def path_shares(
    regions: RegionSet, types: np.ndarray, image_classes: np.ndarray, normal_index: int, normal_type: str
) -> dict:
    """Share of defect images classified by their content, and of normal images called normal."""
    by_content = np.zeros(len(types), dtype=bool)
    for region in regions:
        by_content[region.image_index] |= region.source != "none"
    normal = types == normal_type
    return {
        "defect_by_content": float(by_content[~normal].mean()),
        "normal_called_normal": float((image_classes[normal] == normal_index).mean()),
        "normal_by_content": float(by_content[normal].mean()),
    }


def seeded_model(args: argparse.Namespace, **overrides: Any) -> AnomalyNCD:
    """The CPU-profile model of the benchmark, built after seeding (identical initial weights)."""
    pl.seed_everything(args.seed, verbose=False)
    if getattr(args, "anchor", None) is not None:
        overrides = {"anchor": args.anchor == "on"} | overrides
    if getattr(args, "guidance", None) is not None:
        overrides = {"guidance": {"mode": args.guidance}} | overrides
    return AnomalyNCD(
        n_novel_classes=args.n_classes,
        backbone=CPU_BACKBONE,
        views={"n_views": args.n_views},
        seed=args.seed,
        training={"epochs": args.epochs},
        **overrides,
    )


def run_source(
    name: str,
    regions: RegionSet,
    types: np.ndarray,
    image_paths: list[str],
    score_maps: list[np.ndarray],
    args: argparse.Namespace,
    **model_options: Any,
) -> dict[str, Any]:
    """Ours, k-means, masked pooling + k-means and Anomaly Clustering on one region source."""
    results: dict[str, Any] = {"n_regions": len(regions)}
    region_types = types[[region.image_index for region in regions]]
    model = seeded_model(args, **model_options)
    start = time.perf_counter()
    cache = model.prepare(list(regions))
    results["cache_s"] = time.perf_counter() - start
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}

    train_s = fit_prepared(model, args.epochs)
    found = model.discover(n_images=len(types))
    results["ours"] = {
        "image": clustering_report(types, found.classes).as_dict(),
        "region": clustering_report(region_types, found.region_classes).as_dict(),
        "train_s": train_s,
        "epoch_s": train_s / args.epochs,
        **path_shares(regions, types, found.classes, int(model.normal_index or 0), args.normal_type),
    }
    for label, spherical in (("masked_pooling_kmeans", False), ("masked_pooling_spherical_kmeans", True)):
        labels = masked_pooling_kmeans(cache, len(regions), args.n_classes, args.seed, spherical)
        results[label] = {
            "image": clustering_report(types, image_labels_of_regions(labels, regions, len(types))).as_dict(),
            "region": clustering_report(region_types, labels).as_dict(),
        }

    start = time.perf_counter()
    pooled = cache.tokens[: len(regions), 0].float().mean(dim=1).numpy()
    kmeans_labels = KMeansBaseline(args.n_classes, seed=args.seed).fit_predict(pooled)
    results["kmeans"] = {
        "image": clustering_report(types, image_labels_of_regions(kmeans_labels, regions, len(types))).as_dict(),
        "region": clustering_report(region_types, kmeans_labels).as_dict(),
        "time_s": time.perf_counter() - start,
    }

    start = time.perf_counter()
    tokens = whole_image_tokens(model, image_paths).numpy()
    scores = patch_scores(score_maps, model.model.backbone.grid)
    clustering = AnomalyClustering(args.n_classes)
    ac_labels = clustering.fit_predict(tokens, scores)
    results["anomaly_clustering"] = {
        "image": clustering_report(types, ac_labels).as_dict(),
        "temperature": float(clustering.temperature_),
        "time_s": time.perf_counter() - start,
    }

    if args.known_neu:
        results["ours_with_known"] = with_known_classes(args, regions, types, region_types)

    if args.ablation:
        default_mode = model.guidance_settings.mode
        results["ablation"] = {default_mode: {"image": results["ours"]["image"], "train_s": train_s}}
        for mode in (mode for mode in GUIDANCE_MODES if mode != default_mode):
            variant = seeded_model(args, guidance={"mode": mode})
            variant.load_state_dict(initial_state)  # same start as the default run
            variant.cache, variant.labels, variant.n_unlabeled = model.cache, model.labels, model.n_unlabeled
            seconds = fit_prepared(variant, args.epochs)
            outcome = variant.discover(n_images=len(types))
            results["ablation"][mode] = {
                "image": clustering_report(types, outcome.classes).as_dict(),
                "train_s": seconds,
            }
    print_source(name, results)
    return results


def with_known_classes(
    args: argparse.Namespace, regions: RegionSet, types: np.ndarray, region_types: np.ndarray
) -> dict[str, Any]:
    """Ours with NEU-DET's 6 steel defect types as the labeled known classes (AnomalyNCD's setting)."""
    neu = load_neu_det(args.neu_det)
    neu = neu.groupby("defect_type").head(args.known_neu)
    labeled, classes, names = known_class_regions(neu.reset_index(drop=True))
    model = seeded_model(args, n_known_classes=len(names))
    start = time.perf_counter()
    model.prepare(list(regions), labeled, classes)
    cache_s = time.perf_counter() - start
    train_s = fit_prepared(model, args.epochs)
    found = model.discover(n_images=len(types))
    return {
        "image": clustering_report(types, found.classes).as_dict(),
        "region": clustering_report(region_types, found.region_classes).as_dict(),
        "known_classes": names,
        "n_labeled_regions": len(labeled),
        "cache_s": cache_s,
        "train_s": train_s,
    }


def _line(label: str, report: dict[str, Any]) -> str:
    return f"  {label:<28} NMI {report['nmi']:.3f}  ARI {report['ari']:.3f}  F1 {report['f1']:.3f}"


def print_source(name: str, results: dict[str, Any]) -> None:
    """Print one region source's table."""
    print(f"\n{name} regions ({results['n_regions']} regions), image level:")
    print(_line("ours (AnomalyNCD)", results["ours"]["image"]))
    print(_line("k-means", results["kmeans"]["image"]))
    print(_line("masked pooling + k-means", results["masked_pooling_kmeans"]["image"]))
    print(_line("masked pooling + sph. k-means", results["masked_pooling_spherical_kmeans"]["image"]))
    print(_line("Anomaly Clustering", results["anomaly_clustering"]["image"]))
    print("region level:")
    print(_line("ours (AnomalyNCD)", results["ours"]["region"]))
    print(_line("k-means", results["kmeans"]["region"]))
    ours = results["ours"]
    print(
        f"defect images classified by content {ours['defect_by_content']:.3f}, "
        f"normal images called normal {ours['normal_called_normal']:.3f}"
    )
    print(
        f"ours: views cached in {results['cache_s']:.0f} s, trained in {results['ours']['train_s']:.0f} s "
        f"({results['ours']['epoch_s']:.1f} s/epoch)"
    )
    if "ours_with_known" in results:
        known = results["ours_with_known"]
        print(_line(f"ours + {known['n_labeled_regions']} NEU-DET known", known["image"]))
    for mode, outcome in results.get("ablation", {}).items():
        print(_line(f"ablation guidance={mode}", outcome["image"]))


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtd", type=Path, default=DEFAULT_MTD)
    parser.add_argument(
        "--detector-root", type=Path, default=DETECTOR_ROOT, help="detector checkpoints (reused when present)"
    )
    parser.add_argument(
        "--max-train", type=int, default=0, help="Free images that train Patchcore if needed (0: all 762)"
    )
    parser.add_argument("--sources", default="detector,gt", help="comma-separated: detector, gt")
    parser.add_argument(
        "--stages", default="current,new", help=f"region stages on the detector's maps: {','.join(REGION_STAGES)}"
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-views", type=int, default=4, help="augmented views cached per region")
    parser.add_argument("--ablation", action="store_true", help="also train the four guidance modes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--anchor", choices=("on", "off"), default=None, help="AnomalyNCD anchor (default: the model's)"
    )
    parser.add_argument(
        "--guidance",
        choices=("none", "hard", "soft", "soft_rgf", "balanced"),
        default=None,
        help="guidance mode of ours (default: the model's)",
    )
    parser.add_argument("--known-neu", type=int, default=0, help="also run ours with N NEU-DET images per type known")
    parser.add_argument("--neu-det", type=Path, default=DEFAULT_MTD.parent / "neu-det")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/ncd_mtd"))
    args = parser.parse_args()
    args.n_classes, args.normal_type = N_CLASSES, "Free"
    if not args.mtd.is_dir():
        raise SystemExit(f"MTD not found at {args.mtd}")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    start = time.perf_counter()
    table = load_mtd(args.mtd)
    test = table[table["split"] == "test"].reset_index(drop=True)
    types = test["defect_type"].to_numpy()
    image_paths = [str(path) for path in test["image_path"]]
    print(f"MTD discovery set: {len(test)} images {dict(test['defect_type'].value_counts())}")
    report: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    sources = [source.strip() for source in args.sources.split(",") if source.strip()]
    for source in sources:
        source_start = time.perf_counter()
        if source == "detector":
            stages = [name.strip() for name in args.stages.split(",") if name.strip()]
            detectors: dict[str, tuple[Any, dict[str, float]]] = {}
            for stage in stages:
                kind = STAGE_DETECTOR[stage]
                if kind not in detectors:
                    detectors[kind] = detector_maps(args, table, test, kind)
                    quality = detectors[kind][1]
                    print(
                        f"detector {kind}: image AUROC {quality['image_auroc']:.3f}, pixel AUROC "
                        f"{quality['pixel_auroc']:.3f}, input {quality['detector_input_size']:.0f} px"
                    )
                    report[f"detector_{kind}"] = quality
                maps, times = detectors[kind]
                options = REGION_STAGES[stage]
                start_regions = time.perf_counter()
                regions = stage_regions(maps, stage)
                stage_times = {"regions_s": time.perf_counter() - start_regions}
                score_maps = maps.aligned(long_side=None)
                results = run_source(f"detector/{stage}", regions, types, image_paths, score_maps, args, **options)
                report[f"detector/{stage}"] = results | stage_times
            continue
        if source == "gt":
            regions, times = ground_truth_regions(test), {}
            score_maps = regions.map_set.maps
        else:
            raise SystemExit(f"unknown source {source!r}")
        results = run_source(source, regions, types, image_paths, score_maps, args)
        results |= times
        results["total_s"] = time.perf_counter() - source_start - times.get("detector_fit_s", 0.0)
        report[source] = results
    fits = [value.get("detector_fit_s", 0.0) for key, value in report.items() if key.startswith("detector_")]
    total = time.perf_counter() - start - sum(fits)
    finish_report(report, args.out, total, " (detector training excluded)")


if __name__ == "__main__":
    main()
