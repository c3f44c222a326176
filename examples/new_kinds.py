"""Defects nobody has seen yet: count the classes, reject what fits none, and add new kinds later.

The ProtoAnomalyNCD extensions with the ``DefectDiscovery`` estimator, on the built-in synthetic set
(four defect types on a brick texture) and anomalib's Patchcore:

1. discover on the normal images and only two of the types, with the number of classes estimated
   (``class_count``) and the frozen-space ``knn`` unknown score;
2. predict a batch of the two other types: how many of its images fit no class (``unknown``),
   against the share on new images of the known types;
3. add that batch (continual discovery): new-kind regions become classes appended after the old
   ones, whose ids never change, and the rejection is recalibrated on both sets.

Run: ``python examples/new_kinds.py [output_folder]`` (about 2 minutes on 2 CPU cores).
"""

import sys
from pathlib import Path

import numpy as np

from anomalib_ncd import AnomalyNCD, ClassCountSettings, DefectDiscovery, predict_maps
from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
from anomalib_ncd.detector import make_patchcore, train_detector

FIRST_TYPES = ("crack", "hole")  # known at discovery time; the other two come later


def main(output: Path) -> None:
    table = generate_synthetic_dataset(output / "data", "brick", image_size=(128, 176), n_per_type=12)
    datamodule = mvtec_datamodule(output / "data", "brick")
    detector = make_patchcore("mobilenetv2_100.tv_in1k")
    train_detector(detector, datamodule, root_dir=output / "detector", max_epochs=1)
    maps = predict_maps(detector, datamodule, samples=table)
    types = np.array(maps.defect_types)

    rng = np.random.default_rng(0)
    seen = np.flatnonzero(np.isin(types, ("good", *FIRST_TYPES)))
    held_back = rng.choice(seen, size=len(seen) // 4, replace=False)  # new images of the known kinds
    first = np.setdiff1d(seen, held_back)
    later = np.flatnonzero(~np.isin(types, ("good", *FIRST_TYPES)))

    discovery = DefectDiscovery(
        AnomalyNCD(
            backbone="mobilenetv2_100.tv_in1k",  # the CPU profile (the default); on a GPU: vit_base_patch8_224.dino
            training={"epochs": 15},
            views={"n_views": 2},
            novelty={"score": "knn", "quantile": 0.05},
        ),
        class_count=ClassCountSettings(k_min=2, k_max=6),
        root_dir=output / "discovery",
        progress=False,
    )
    discovery.fit(maps.subset(first.tolist()))
    estimate = discovery.class_count_
    print(f"estimated classes: {estimate.n_classes} (normal + {len(FIRST_TYPES)} kinds is 3); scores {estimate.scores}")

    known = discovery.predict(maps.subset(held_back.tolist()))
    new = discovery.predict(maps.subset(later.tolist()))
    print(
        f"unknown: {known['unknown'].mean():.0%} of new images of known kinds, {new['unknown'].mean():.0%} of new kinds"
    )

    batch = discovery.add_batch(maps.subset(later.tolist()))
    update = discovery.last_update_
    names = discovery.model_.class_names
    print(f"appended classes: {[names[index] for index in update.new_classes]}")
    print(batch.assign(true_type=types[later])[["true_type", "class_name", "unknown"]].value_counts().to_string())
    print(f"report: {discovery.write_report(output / 'report')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_new_kinds"))
