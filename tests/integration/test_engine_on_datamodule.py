"""``Engine.train(AnomalyNCD(detector=...), datamodule=...)``: anomalib's own train loop on a datamodule.

A Patchcore (real offline ImageNet weights) is trained on a small ``SyntheticDefects`` set; the
discovery model is then trained by anomalib's ``Engine`` on the same datamodule, with nothing but
the detector's checkpoint: the fit's setup maps the test images, cuts MEBin regions and caches their
views. anomalib's ``test`` classifies the images and logs image NMI / ARI / F1 against the types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_anomalib_cli import BACKBONE, skip_without_weights

pytestmark = pytest.mark.integration

CATEGORY = "brick"
EPOCHS = 3


def _datamodule(root: Path):
    from anomalib_ncd.data import SyntheticDefects

    return SyntheticDefects(
        root=root, category=CATEGORY, image_size=(64, 96), n_per_type=4, n_train_good=10, n_test_good=4, seed=0
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_ncd.detector import make_patchcore, train_detector
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

    skip_without_weights()
    root = tmp_path_factory.mktemp("engine_on_datamodule")
    datamodule = _datamodule(root / "data")
    detector_engine = train_detector(
        make_patchcore(BACKBONE), datamodule, root_dir=root / "results", accelerator="cpu", enable_progress_bar=False
    )
    detector_checkpoint = Path(detector_engine.trainer.checkpoint_callback.best_model_path)
    seed_everything(0, verbose=False)
    model = AnomalyNCD(n_novel_classes=5, detector=str(detector_checkpoint), views={"n_views": 2})
    engine = Engine(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=root / "results"
    )
    datamodule = _datamodule(root / "data")
    metrics = engine.train(model, datamodule=datamodule)
    return {
        "model": model,
        "engine": engine,
        "datamodule": datamodule,
        "metrics": metrics[0],
        "detector_checkpoint": detector_checkpoint,
        "root": root,
    }


def test_the_fit_ran_anomalibs_loop_for_the_epochs_asked(trained: dict) -> None:
    engine = trained["engine"]
    assert engine.trainer.current_epoch == EPOCHS  # Engine(max_epochs=3), not the model's 50
    assert int(trained["model"].best_head) in range(trained["model"].model.heads.n_heads)


def test_the_regions_came_from_the_detector_and_the_views_are_gone(trained: dict) -> None:
    model = trained["model"]
    assert model.mebin is not None and model.mebin.is_fitted  # fitted on the test split's maps
    assert model.cache is None  # the views were cached on disk for the fit and removed after it
    assert not list(Path(trained["root"], "results").rglob("views"))
    assert "train_dataloader" not in vars(trained["datamodule"])  # the datamodule is as it was


def test_anomalibs_test_scores_the_discovered_classes(trained: dict) -> None:
    """The test split's images classified through predict_step: well above chance on this easy set.

    Five classes over 20 images: the same predictions shuffled score about 0.2 NMI; measured here
    0.66 NMI at seed 0.
    """
    metrics = trained["metrics"]
    assert {"image_NMI", "image_ARI", "image_F1"} <= set(metrics)
    assert all(np.isfinite(metrics[name]) for name in ("image_NMI", "image_ARI", "image_F1"))
    assert metrics["image_NMI"] > 0.4


def test_the_checkpoint_predicts_new_images_with_its_recorded_detector(trained: dict) -> None:
    from anomalib.engine import Engine

    from anomalib_ncd import AnomalyNCD, DiscoveryBatch

    checkpoint = Path(trained["engine"].trainer.checkpoint_callback.best_model_path)
    loaded = AnomalyNCD.load_from_checkpoint(checkpoint, map_location="cpu")
    assert loaded.detector_checkpoint == str(trained["detector_checkpoint"].resolve())
    images = trained["datamodule"].root / CATEGORY / "test" / "hole"
    batches = Engine(logger=False, accelerator="cpu", devices=1).predict(model=loaded, data_path=images)
    assert batches is not None and all(isinstance(batch, DiscoveryBatch) for batch in batches)
    classes = [int(c) for batch in batches for c in batch.pred_class]
    assert len(classes) == 4 and all(0 <= c < loaded.n_classes for c in classes)
