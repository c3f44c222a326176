"""Real anomalib Patchcore -> raw maps through Engine.predict -> MEBin -> regions on the true defects."""

import cv2
import numpy as np
import pytest

from anomalib_ncd.backbones.offline_weights import OFFLINE_WEIGHTS, WeightsNotFoundError, ensure_backbone
from anomalib_ncd.data.synthetic import generate_synthetic_dataset
from anomalib_ncd.io import read_mask
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
    return table, maps


def test_maps_cover_the_test_set_with_types(patchcore_maps):
    table, maps = patchcore_maps
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
    _, maps = patchcore_maps
    regions = extract_regions(maps)
    defect_images = [i for i in range(len(maps)) if not maps.is_normal[i]]
    truths = {i: read_mask(maps.mask_paths[i]) for i in defect_images}
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
