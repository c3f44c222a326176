"""Reuse saved anomaly maps: export a detector's raw maps once, discover classes from them any time.

``AnomalyMapExporter`` writes raw float maps (``.npy``) and an ``index.csv`` from ``Engine.predict``
or from anomalib's own CLI (``anomalib predict ... --trainer.callbacks+=anomalib_ncd.AnomalyMapExporter
--trainer.callbacks.output_dir=maps``). ``load_map_folder`` reads them back (also 8-bit PNG maps laid
out like the dataset, as the AnomalyNCD authors distribute theirs), and ``DefectDiscovery`` needs no
detector at all. About a minute on 2 CPU cores.

Run: ``python examples/saved_maps.py [output_folder]``.
"""

import sys
from pathlib import Path

from anomalib.engine import Engine

from anomalib_ncd import AnomalyMapExporter, AnomalyNCD, DefectDiscovery, load_map_folder
from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
from anomalib_ncd.detector import make_patchcore, train_detector


def main(output: Path) -> None:
    table = generate_synthetic_dataset(output / "data", "brick", image_size=(128, 176), n_per_type=12)
    datamodule = mvtec_datamodule(output / "data", "brick")
    detector = make_patchcore("mobilenetv2_100.tv_in1k")
    train_detector(detector, datamodule, root_dir=output / "detector")

    # once: the detector's raw maps to disk
    exporter = AnomalyMapExporter(output / "maps")
    Engine(callbacks=[exporter], logger=False).predict(model=detector, datamodule=datamodule)

    # any time later, with no detector: classes from the saved maps
    maps = load_map_folder(output / "maps", samples=table)  # the table adds the true types, for metrics
    model = AnomalyNCD(n_novel_classes=5, backbone="mobilenetv2_100.tv_in1k", training={"epochs": 20})
    discovery = DefectDiscovery(model, root_dir=output).fit(maps)
    print(discovery.assignments_[["image_path", "class_name", "confidence", "defect_type"]].to_string(index=False))
    print({level: round(values["nmi"], 3) for level, values in discovery.metrics().items()}, "NMI")
    print(f"report: {discovery.write_report(output / 'report', title='saved maps')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_saved_maps"))
