"""From an anomalib detector to anomaly-centred regions, in a few lines of Python.

Generates the built-in synthetic multi-type defect set, trains anomalib's Patchcore on offline
ImageNet weights, takes its raw anomaly maps through ``Engine.predict``, and cuts regions with
MEBin. Run: ``python examples/regions_from_anomalib.py [output_folder]``.
"""

import sys
from pathlib import Path

from anomalib_ncd import extract_regions, predict_maps
from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
from anomalib_ncd.detector import make_patchcore, train_detector


def main(output: Path) -> None:
    table = generate_synthetic_dataset(output / "data", "brick", image_size=(128, 176))
    datamodule = mvtec_datamodule(output / "data", "brick")
    model = make_patchcore("mobilenetv2_100.tv_in1k")  # any anomalib image model works here
    train_detector(model, datamodule, root_dir=output / "detector", max_epochs=1)
    maps = predict_maps(model, datamodule, samples=table)  # raw maps, with each image's defect type
    regions = extract_regions(maps)
    csv_path = regions.save(output / "regions")
    print(f"{len(regions)} regions from {len(maps)} images; see {csv_path}")
    for defect_type in sorted(set(maps.defect_types)):
        found = [r for r in regions if maps.defect_types[r.image_index] == defect_type and not r.whole_image]
        print(f"  {defect_type:8s} {len(found)} regions")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_regions"))
