"""Real anomalib Patchcore -> raw maps through Engine.predict -> MEBin -> regions on the true defects."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from anomalib_ncd.backbones.offline_weights import OFFLINE_WEIGHTS, WeightsNotFoundError, ensure_backbone
from anomalib_ncd.data.image_io import read_mask_file
from anomalib_ncd.data.synthetic import generate_synthetic_dataset
from anomalib_ncd.maps.from_anomalib import predict_maps
from anomalib_ncd.regions.extract import extract_regions

pytestmark = pytest.mark.integration

# layers at strides 8 and 16, the role of Patchcore's layer2/layer3 on a ResNet
LAYERS = {
    "mobilenetv2_100.tv_in1k": ["blocks.2", "blocks.4"],
    "tf_efficientnet_lite0.in1k_offline": ["blocks.2", "blocks.4"],
}


def _offline_backbone():
    for name in OFFLINE_WEIGHTS:
        try:
            return ensure_backbone(name)
        except WeightsNotFoundError:
            continue
    pytest.skip("no offline ImageNet weights installed (see README)")
    return None


@pytest.fixture(scope="module")
def patchcore_maps(tmp_path_factory):
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore

    root = tmp_path_factory.mktemp("synthetic")
    table = generate_synthetic_dataset(
        root, "brick", image_size=(112, 176), n_train_good=10, n_test_good=4, n_per_type=4, seed=3
    )
    backbone = _offline_backbone()
    datamodule = MVTecAD(root=root, category="brick", train_batch_size=10, eval_batch_size=8, num_workers=0)
    model = Patchcore(backbone=backbone, layers=LAYERS[backbone], pre_trained=True, coreset_sampling_ratio=0.05)
    engine = Engine(max_epochs=1, default_root_dir=root / "results", logger=False, accelerator="cpu")
    engine.fit(model=model, datamodule=datamodule)
    maps = predict_maps(model, datamodule, samples=table, accelerator="cpu")
    return table, maps, model, root


def test_maps_cover_the_test_set_with_types(patchcore_maps):
    table, maps, _, _ = patchcore_maps
    assert len(maps) == int((table["split"] == "test").sum())
    assert set(maps.defect_types) == {"good", "scratch", "hole", "stain", "crack"}
    assert all(shape == (112, 176) for shape in maps.image_shapes)
    # raw maps, not anomalib's [0, 1] normalised ones: defect images peak higher than normal ones
    peaks = np.array([m.max() for m in maps.maps])
    normal = np.array(maps.is_normal)
    assert peaks[~normal].mean() > peaks[normal].mean()


def _resized(mask, shape):
    return cv2.resize(mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST) > 0


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_regions_overlap_the_true_defects(patchcore_maps):
    _, maps, _, _ = patchcore_maps
    regions = extract_regions(maps)
    defect_images = [i for i in range(len(maps)) if not maps.is_normal[i]]
    truths = {i: read_mask_file(maps.mask_paths[i]) for i in defect_images}
    predicted = {i: _resized(regions.binarization[i].mask, truths[i].shape) for i in defect_images}
    recalls, box_fractions = [], []
    for index in defect_images:
        covered = np.zeros_like(truths[index])
        for region in regions.of_image(index):
            x0, y0, x1, y1 = region.box
            covered[y0:y1, x0:x1] = True
            assert region.crop.shape[:2] == region.mask.shape == (y1 - y0, x1 - x0)
            assert 0.0 <= region.score <= 1.0
        recalls.append(covered[truths[index]].mean())
        box_fractions.append(covered.mean())
    ious = [_iou(predicted[i], truths[i]) for i in defect_images]
    # the same masks scored against another image's defect: what chance overlap looks like
    shuffled = [_iou(predicted[i], truths[j]) for i, j in zip(defect_images, np.roll(defect_images, 3), strict=True)]
    print(
        f"defect recall by region boxes {np.mean(recalls):.3f} "
        f"(boxes cover {np.mean(box_fractions):.2f} of the image), "
        f"MEBin mask IoU {np.mean(ious):.3f} vs shuffled {np.mean(shuffled):.3f}"
    )
    assert np.mean(recalls) > 0.8
    assert np.mean(box_fractions) < 0.5
    assert np.mean(ious) > 0.15
    assert np.mean(ious) > 3 * np.mean(shuffled)


def test_exporter_writes_raw_maps_through_engine_predict(patchcore_maps, tmp_path):
    from anomalib.engine import Engine

    from anomalib_ncd.maps.export import AnomalyMapExporter
    from anomalib_ncd.maps.folder import load_map_folder

    _, maps, model, _ = patchcore_maps
    exporter = AnomalyMapExporter(tmp_path / "exported")
    engine = Engine(callbacks=[exporter], logger=False, accelerator="cpu", default_root_dir=tmp_path)
    test_images = [p for p in maps.image_paths if "/test/" in p][:5]
    folder = tmp_path / "some_images"
    folder.mkdir()
    for path in test_images:
        (folder / path.replace("/", "_")).symlink_to(path)
    engine.predict(model=model, data_path=folder)
    loaded = load_map_folder(tmp_path / "exported")
    assert len(loaded) == 5
    by_path = dict(zip(maps.image_paths, maps.maps, strict=True))
    for path, anomaly_map in zip(loaded.image_paths, loaded.maps, strict=True):
        original = by_path[str(Path(path).resolve())]
        np.testing.assert_allclose(anomaly_map, original, rtol=1e-4, atol=1e-4)  # the raw maps, unclipped
    assert max(float(m.max()) for m in loaded.maps) > 1.0  # anomalib's normalised maps would stop at 1


def test_exporter_in_anomalib_predict_cli(patchcore_maps, tmp_path):
    """`anomalib predict` (anomalib's own CLI, another process) with the exporter as a trainer callback."""
    import subprocess
    import sys

    from anomalib_ncd.maps.folder import load_map_folder

    _, maps, model, root = patchcore_maps
    checkpoint = next((root / "results").rglob("model.ckpt"))
    anomalib_cli = Path(sys.executable).with_name("anomalib")
    command = [
        str(anomalib_cli),
        "predict",
        "--model",
        "anomalib.models.Patchcore",
        "--model.backbone",
        model.model.backbone.split(".")[0],
        "--model.layers",
        str(list(model.model.layers)),
        "--model.pre_trained",
        "false",  # the checkpoint holds the backbone weights too
        "--ckpt_path",
        str(checkpoint),
        "--data",
        str(root / "brick" / "test" / "hole"),
        "--trainer.callbacks+=anomalib_ncd.AnomalyMapExporter",
        "--trainer.callbacks.output_dir",
        str(tmp_path / "cli"),
        "--trainer.accelerator",
        "cpu",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = load_map_folder(tmp_path / "cli")
    assert len(exported) == 4
    by_path = dict(zip(maps.image_paths, maps.maps, strict=True))
    for path, anomaly_map in zip(exported.image_paths, exported.maps, strict=True):
        np.testing.assert_allclose(anomaly_map, by_path[str(Path(path).resolve())], rtol=1e-4, atol=1e-4)
