"""Distributed data-parallel training of the discovery model: two processes on the CPU (gloo).

``DefectDiscovery(devices=2, strategy="ddp")`` trains through anomalib's ``Engine`` with Lightning's
DDP (started at the fit: ``ddp_spawn``), each process on its share of the regions and of the batch,
the frozen views read from the on-disk cache. The weights, the best head and the unknown thresholds
come back to this process, and the classes are those of one process within noise. Measured on a
2-core CPU: NMI 0.836 on one device and 0.836 on two (head 3 both; 55 s against 18 s, two processes
sharing two cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_anomalib_cli import BACKBONE, skip_without_weights

pytestmark = pytest.mark.integration


def _fit(regions: list, devices: int, folder: Path):
    from lightning.pytorch import seed_everything

    from anomalib_ncd.discovery.lightning_model import AnomalyNCD
    from anomalib_ncd.pipeline.estimator import DefectDiscovery

    seed_everything(0, verbose=False)
    model = AnomalyNCD(n_novel_classes=5, backbone=BACKBONE, views={"n_views": 2}, training={"epochs": 4})
    discovery = DefectDiscovery(
        model,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        progress=False,
        root_dir=folder / "engine",
        checkpoint_dir=folder / "weights",
        view_cache_dir=folder / "views",
    )
    return discovery.fit(regions)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from anomalib_ncd.data.synthetic import generate_synthetic_dataset
    from anomalib_ncd.regions.extract import ground_truth_regions

    skip_without_weights()
    root = tmp_path_factory.mktemp("ddp")
    table = generate_synthetic_dataset(
        root / "data", "brick", image_size=96, n_train_good=1, n_test_good=4, n_per_type=8, seed=0
    )
    test = table[table["split"] == "test"].reset_index(drop=True)
    regions = ground_truth_regions(test)
    return {
        "test": test,
        "one": _fit(regions, 1, root / "one"),
        "two": _fit(regions, 2, root / "two"),
    }


def test_two_processes_train_and_hand_the_model_back(runs: dict) -> None:
    two = runs["two"]
    assert two.checkpoint_path_.is_file()  # written by rank 0 inside the spawned processes
    assert np.isfinite(float(two.model_.unknown_threshold))  # calibrated there, and handed back
    assert int(two.model_.best_head) in range(two.model_.model.heads.n_heads)
    assert len(two.classification_.classes) == len(runs["test"])


def test_two_processes_find_the_classes_one_finds(runs: dict) -> None:
    from anomalib_ncd.evaluation.clustering import clustering_report

    truth = runs["test"]["defect_type"].tolist()
    one = clustering_report(truth, runs["one"].classification_.classes)
    two = clustering_report(truth, runs["two"].classification_.classes)
    print(f"NMI one device {one.nmi:.3f}, two {two.nmi:.3f}")
    assert one.nmi > 0.5
    assert abs(one.nmi - two.nmi) <= 0.05


def test_discover_trains_on_two_processes_from_the_command_line(tmp_path: Path) -> None:
    """``anomalib-ncd discover --devices 2 --strategy ddp``: the stages before training run once."""
    import pandas as pd

    from anomalib_ncd.cli import main
    from anomalib_ncd.results import read_run_state

    arguments = ["discover", "--devices=2", "--strategy=ddp", "--accelerator=cpu", "--training.epochs=3"]
    assert main([*arguments, f"--output={tmp_path}"]) == 0
    run = tmp_path / "NCD" / "synthetic" / "brick" / "latest"
    assert read_run_state(run)["complete"] is True
    assert len(pd.read_csv(run / "assignments.csv")) == 40
    assert len(list((tmp_path / "NCD" / "synthetic" / "brick").glob("v*"))) == 1  # one run, not one per process
