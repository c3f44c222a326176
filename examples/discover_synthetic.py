"""Discover defect classes with AnomalyNCD inside an anomalib pipeline, in a few lines of Python.

Generates the built-in synthetic set (four defect types on a brick texture), trains anomalib's
Patchcore on offline ImageNet weights, cuts regions from its raw maps, trains the discovery model with
anomalib's ``Engine`` (checkpoint in anomalib's results layout), and scores the discovered classes
against the true types. Run: ``python examples/discover_synthetic.py [output_folder]``.
"""

import sys
from pathlib import Path

from anomalib.engine import Engine

from anomalib_ncd import AnomalyNCD, clustering_report, extract_regions, predict_maps
from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
from anomalib_ncd.detector import make_patchcore, train_detector


def main(output: Path) -> None:
    table = generate_synthetic_dataset(output / "data", "brick", image_size=(128, 176), n_per_type=12)
    datamodule = mvtec_datamodule(output / "data", "brick")
    detector = make_patchcore("mobilenetv2_100.tv_in1k")
    train_detector(detector, datamodule, root_dir=output / "detector", max_epochs=1)
    maps = predict_maps(detector, datamodule, samples=table)
    regions = extract_regions(maps)

    n_types = len(set(maps.defect_types))  # the defect types plus "good", the normal class
    model = AnomalyNCD(
        n_novel_classes=n_types,
        backbone="mobilenetv2_100.tv_in1k",  # the CPU profile (the default); on a GPU: vit_base_patch8_224.dino
        training={"epochs": 15},
        views={"n_views": 2},
    )
    model.prepare(regions)  # frozen backbone runs once per view; its output is cached
    engine = Engine(default_root_dir=output / "discovery", max_epochs=15, logger=False)
    engine.fit(model)
    found = model.discover(n_images=len(maps))
    print(f"checkpoint: {engine.trainer.checkpoint_callback.best_model_path}")
    print(f"discovered classes vs true types: {clustering_report(maps.defect_types, found.classes)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_discovery"))
