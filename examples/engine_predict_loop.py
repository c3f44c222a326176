"""Plug a trained discovery model into an existing anomalib ``Engine.predict`` loop.

A plant already runs ``Engine.predict(model=detector, data_path=...)``. Attach the detector to the
discovery model and predict with the discovery model instead: each batch comes back as a
``DiscoveryBatch`` (anomalib's ``ImageBatch`` plus ``pred_class``, ``class_confidence`` and the
classes of each region), computed from the detector's raw maps.

This script first makes what a plant would already have (a detector checkpoint and a discovery run
on the built-in synthetic set, about a minute), then runs the loop.

Run: ``python examples/engine_predict_loop.py [output_folder]``.
"""

import sys
from pathlib import Path

from anomalib.engine import Engine

from anomalib_ncd import AnomalyNCD, load_anomalib_model
from anomalib_ncd.cli import main as anomalib_ncd_cli
from anomalib_ncd.results import read_run_state


def main(output: Path) -> None:
    # what the plant has: `anomalib-ncd discover` on its images (here the built-in synthetic set)
    assert anomalib_ncd_cli(["discover", "--output", str(output), "--training.epochs", "20"]) == 0
    run = output / "NCD" / "synthetic" / "brick" / "latest"

    # the loop: the discovery model, with the detector whose raw maps it was trained on
    model = AnomalyNCD.load_from_checkpoint(run / "weights" / "lightning" / "model.ckpt")
    state = read_run_state(run)  # the detector's checkpoint and model class, as discover recorded them
    model.detector = load_anomalib_model(state["detector_checkpoint"], state.get("detector_model"))
    new_images = output / "data" / "synthetic" / "brick" / "test" / "scratch"
    for batch in Engine(logger=False).predict(model=model, data_path=new_images):
        for path, label, confidence, boxes in zip(
            batch.image_path, batch.pred_class, batch.class_confidence, batch.region_boxes, strict=True
        ):
            name = model.class_names[int(label)]
            print(f"{Path(path).name}: {name} ({float(confidence):.2f}), regions {boxes.tolist()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/example_engine_predict"))
