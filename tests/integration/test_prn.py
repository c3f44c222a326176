"""PRN trains for real through anomalib's Engine on a small synthetic set and localises its defects."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from anomalib.engine import Engine

    from anomalib_ncd.data import generate_synthetic_dataset, mvtec_datamodule
    from anomalib_ncd.maps.from_anomalib import predict_maps
    from anomalib_ncd.models import Prn

    root = tmp_path_factory.mktemp("prn")
    table = generate_synthetic_dataset(
        root / "data", "washer", image_size=(128, 128), n_train_good=24, n_test_good=4, n_per_type=4, seed=3
    )
    test = table[table["split"] == "test"]
    anomalous = test[~test["is_normal"]]
    # 1 real anomalous image per type trains; the others are evaluated
    samples = anomalous.groupby("defect_type").head(1)[["image_path", "mask_path", "defect_type"]]
    samples.to_csv(root / "real.csv", index=False)
    torch.manual_seed(0)
    model = Prn(
        backbone="mobilenetv2_100.tv_in1k", input_size=128, epochs=6, lr=1e-3, anomalous_samples=str(root / "real.csv"),
        n_real_per_type=1, evaluator=False, visualizer=False,
    )  # fmt: skip
    datamodule = mvtec_datamodule(root / "data", "washer")
    datamodule.train_batch_size = 8
    engine = Engine(max_epochs=6, default_root_dir=root / "results", logger=False, accelerator="cpu")
    engine.fit(model=model, datamodule=datamodule)
    maps = predict_maps(model, datamodule, engine=engine, samples=table)
    return {"model": model, "maps": maps, "samples": samples, "root": root}


def test_prototypes_and_real_samples(trained):
    model = trained["model"]
    counts = {p.shape[0] for p in model.model.prototypes}
    assert counts == {2}  # 10% of 24 training images, rounded
    assert sorted(model.real_samples["image_path"]) == sorted(trained["samples"]["image_path"])


def test_pixel_auroc_well_above_chance(trained):
    import cv2

    maps, held_out = trained["maps"], set(trained["samples"]["image_path"])
    scores, labels = [], []
    for anomaly_map, path, mask_path in zip(maps.maps, maps.image_paths, maps.mask_paths, strict=True):
        if path in held_out:
            continue
        height, width = anomaly_map.shape
        truth = np.zeros((height, width), bool)
        if mask_path is not None and not pd.isna(mask_path):
            truth = cv2.resize(cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE), (width, height)) > 127
        scores.append(anomaly_map.ravel())
        labels.append(truth.ravel())
    auroc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert auroc > 0.75, auroc


def test_checkpoint_loads_by_its_results_path_and_predicts_the_same(trained):
    from anomalib_ncd.maps.from_anomalib import load_anomalib_model
    from anomalib_ncd.models import Prn

    checkpoints = list((trained["root"] / "results").rglob("model.ckpt"))
    assert len(checkpoints) == 1
    assert "Prn" in checkpoints[0].parts  # anomalib's results/<Model>/... layout
    loaded = load_anomalib_model(checkpoints[0])
    assert isinstance(loaded, Prn)
    images = torch.rand(2, 3, 128, 128)
    trained["model"].eval()
    expected = trained["model"].model(images)
    found = loaded.model(images)
    torch.testing.assert_close(found.anomaly_map, expected.anomaly_map)
