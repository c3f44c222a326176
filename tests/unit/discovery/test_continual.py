"""Continual discovery: old class ids stay, new kinds get appended classes."""

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from anomalib_ncd.discovery.continual import add_batch, classify_keeping_old_ids, typicality
from anomalib_ncd.regions.extract import extract_regions
from anomalib_ncd.regions.soft import regions_without_anomaly
from tests.unit.discovery.test_model_lightning import SHAPE, blob, fit, make_model, make_scene

PAPERS_MODEL = {"anchor": False, "guidance": {"mode": "soft_rgf"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("continual")
    images, maps, _, map_set = make_scene(root)
    seed_everything(0, verbose=False)
    # Random CNN weights give no meaningful representation; the toy set exercises the appending
    # mechanism on the papers' model (CLS feature alone, soft guidance), where its stripes stand out.
    model = make_model(epochs=2, **PAPERS_MODEL)
    model.prepare(extract_regions(map_set))
    fit(model, root=root, epochs=2)
    return model, images, maps


def striped_batch(n=6):
    """A new kind of defect: dark-and-bright stripes where the map is hot."""
    images, maps = [], []
    for index in range(n):
        rng = np.random.default_rng(100 + index)
        image = rng.integers(80, 120, size=(*SHAPE, 3), dtype=np.uint8)
        centre = (int(rng.integers(20, SHAPE[0] - 20)), int(rng.integers(20, SHAPE[1] - 20)))
        image[centre[0] - 8 : centre[0] + 8 : 2, centre[1] - 8 : centre[1] + 8] = 250
        image[centre[0] - 7 : centre[0] + 8 : 2, centre[1] - 8 : centre[1] + 8] = 0
        anomaly_map = rng.uniform(0, 0.3, size=SHAPE).astype(np.float32) + blob(SHAPE, centre, 4, 3.0)
        images.append(image)
        maps.append(anomaly_map.astype(np.float32))
    return images, maps


def test_old_batch_adds_nothing_and_keeps_ids(trained):
    model, images, maps = trained
    before = model.classify_images(images, maps)
    update = add_batch(model, images, maps, model.region_features(), quantile=0.05, min_new_regions=3)
    assert update.new_classes == []
    assert update.model is model
    np.testing.assert_array_equal(update.classification.classes, before.classes)


def test_new_kind_gets_appended_classes_and_old_prototypes_stay(trained):
    model, images, maps = trained
    new_images, new_maps = striped_batch()
    update = add_batch(
        model, new_images, new_maps, model.region_features(), quantile=0.5, n_new_classes=1, min_new_regions=1
    )
    assert update.new_kind.any()
    assert update.new_classes == [model.n_classes]
    extended = update.model
    assert extended.n_classes == model.n_classes + 1
    old = model.network.heads.prototypes()
    torch.testing.assert_close(extended.network.heads.prototypes()[:, : model.n_classes], old)
    # old images whose regions fit an old class are classified exactly as before: same ids
    again = classify_keeping_old_ids(extended, model, update.threshold, images, maps)
    before = model.classify_images(images, maps)
    fits_old = typicality(model, before.region_features) >= update.threshold
    fitting_images = {r.image_index for r, fit in zip(before.regions, fits_old, strict=True) if fit}
    fitting_images -= {r.image_index for r, fit in zip(before.regions, fits_old, strict=True) if not fit}
    assert fitting_images
    for image in fitting_images:
        assert again.classes[image] == before.classes[image]
    # the new-kind regions now fit their new class better than any old one
    new_rows = np.flatnonzero(update.new_kind)
    assert (update.classification.region_classes[new_rows] == model.n_classes).mean() >= 0.5
    assert (typicality(extended, update.classification.region_features[new_rows]) >= update.typicality[new_rows]).all()


def test_quantile_is_checked(trained):
    model, images, maps = trained
    with pytest.raises(ValueError, match="quantile"):
        add_batch(model, images, maps, model.region_features(), quantile=1.5)


def test_features_alone_leave_the_extended_model_uncalibrated(trained):
    model, _, _ = trained
    new_images, new_maps = striped_batch()
    update = add_batch(model, new_images, new_maps, model.region_features(), quantile=0.5, n_new_classes=1)
    assert np.isnan(float(update.model.unknown_threshold))
    assert not update.classification.is_unknown.any()


@pytest.mark.parametrize("score", ["vmf", "knn"])
def test_rejection_is_recalibrated_on_the_earlier_and_the_new_regions(trained, score):
    """With the earlier regions classified, the extended model's thresholds hold on both sets together."""
    from anomalib_ncd.discovery.novelty import calibrate

    model, images, maps = trained
    if score == "knn":  # the same trained weights, judged by the frozen-space score
        knn = make_model(epochs=2, **PAPERS_MODEL, novelty={"score": "knn", "quantile": 0.05})
        knn.load_state_dict({k: v for k, v in model.state_dict().items() if k != "novelty_bank"})
        knn.cache, knn.labels, knn.n_unlabeled, knn.mebin = model.cache, model.labels, model.n_unlabeled, model.mebin
        knn.calibrate_novelty()
        model = knn
    earlier = model.classify_images(images, maps)
    new_images, new_maps = striped_batch()
    update = add_batch(model, new_images, new_maps, earlier, quantile=0.5, n_new_classes=1)
    extended = update.model
    assert np.isfinite(float(extended.unknown_threshold))
    batch = update.classification
    if score == "knn":
        found = [part.region_descriptors[~regions_without_anomaly(part.regions)] for part in (earlier, batch)]
        np.testing.assert_allclose(extended.novelty_bank.numpy(), np.concatenate(found), atol=1e-5)
    # the thresholds are those of the union of earlier and new regions, at the model's quantile
    both = earlier.regions + batch.regions
    offset = len(earlier.classes)

    def scores(part):
        descriptors = None if score == "vmf" else torch.from_numpy(part.region_descriptors)
        return extended.score_unknown(part.region_features, descriptors, in_bank=True)

    expected = calibrate(
        np.concatenate([scores(earlier), scores(batch)]),
        regions_without_anomaly(both),
        np.array([r.area for r in both], dtype=float),
        np.array([r.image_index for r in earlier.regions] + [r.image_index + offset for r in batch.regions]),
        extended.fusion_temperature,
        0.05,
    )
    assert float(extended.unknown_threshold) == pytest.approx(expected[0], rel=1e-4)
    assert float(extended.unknown_image_threshold) == pytest.approx(expected[1], rel=1e-4)
    # the batch's verdict is the extended model's: at most a few of its images are rejected
    assert batch.is_unknown is not None
    assert batch.is_unknown.mean() <= 0.5
