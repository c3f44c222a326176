"""AnomalyNCD as a Lightning/anomalib module: prepare, fit, discover, checkpoints and predict_step."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from anomalib import LearningType
from anomalib.data import ImageBatch
from anomalib.models import AnomalibModule
from lightning.pytorch import Callback, Trainer, seed_everything

import anomalib_ncd
from anomalib_ncd.discovery.batch import DiscoveryBatch
from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.regions.crops import Region
from anomalib_ncd.regions.extract import extract_regions

N_NOVEL = 3
N_HEADS = 3


def make_model(epochs=2, **kwargs):
    options = {
        "n_novel_classes": N_NOVEL,
        "backbone": "mobilenetv2_100",
        "pretrained": False,
        "tail_dim": 64,
        "n_heads": N_HEADS,
        "views": {"size": 64, "resize": 72, "n_views": 2},
        "training": {"epochs": epochs, "batch_size": 4},
    }
    options.update(kwargs)
    return AnomalyNCD(**options)


def quiet_trainer(root=None, **limits):
    """A CPU trainer without logger, checkpoints, progress bar or summary, bounded by ``limits``."""
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **limits,
    )


def fit(model, root=None, epochs=2):
    trainer = quiet_trainer(root, max_epochs=epochs)
    trainer.fit(model)
    return trainer


def make_region(number, kind):
    """A 48 px region: ``square`` (a bright blob), ``stripes`` (dark lines) or ``whole`` (nothing found)."""
    crop = np.random.default_rng(number).integers(90, 110, size=(48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), dtype=bool)
    if kind == "square":
        crop[16:32, 16:32] = 230
        mask[16:32, 16:32] = True
    elif kind == "stripes":
        crop[::4, 8:40] = 10
        mask[::4, 8:40] = True
    whole = kind == "whole"
    region = Region(
        image_index=number // 2,
        box=(0, 0, 48, 48),
        area=int(mask.sum()),
        score=0.0 if whole else 0.4 + 0.05 * number,
        whole_image=whole,
    )
    region.crop, region.mask = crop, mask
    return region


def region_list(n_defects=10, n_whole=2, start=0):
    kinds = ["square", "stripes"] * (n_defects // 2) + ["whole"] * n_whole
    return [make_region(start + number, kind) for number, kind in enumerate(kinds)]


def trained_result(regions, seed=0, epochs=2):
    seed_everything(seed, verbose=False)
    model = make_model(epochs)
    model.prepare(regions)
    fit(model, epochs=epochs)
    return model, model.discover()


@pytest.fixture(scope="module")
def regions():
    return region_list()  # images 0-4 hold two defects each, image 5 two whole-image regions


@pytest.fixture(scope="module")
def trained(regions):
    seed_everything(0, verbose=False)
    model = make_model()
    model.prepare(regions)
    before = {name: value.detach().clone() for name, value in model.model.state_dict().items()}
    fit(model)
    return model, model.discover(), before


# ------------------------------------------------------------------------------------ the module


def test_is_an_anomalib_module_exported_by_the_package():
    assert anomalib_ncd.AnomalyNCD is AnomalyNCD
    assert issubclass(AnomalyNCD, AnomalibModule)
    model = make_model(epochs=7)
    assert isinstance(model.learning_type, LearningType)
    # anomalib's Engine.fit runs a training loop for one-class models only
    assert model.learning_type == LearningType.ONE_CLASS
    arguments = model.trainer_arguments
    assert "max_epochs" not in arguments  # anomalib's Engine would put it over the user's max_epochs
    assert arguments["num_sanity_val_steps"] == 0
    assert arguments["limit_val_batches"] == 0
    assert model.network is model.model
    assert model.network.heads.n_classes == N_NOVEL
    assert model.normal_index == 0


def test_settings_errors():
    with pytest.raises(ValueError, match="n_novel_classes"):
        make_model(n_novel_classes=0)
    with pytest.raises(TypeError, match="ViewSettings"):
        make_model(views=[64, 72])
    with pytest.raises(ValueError, match="unknown timm model"):
        make_model(backbone="not_a_model_at_all")


def test_data_errors(regions):
    model = make_model()
    with pytest.raises(RuntimeError, match="prepare"):
        model.train_dataloader()
    with pytest.raises(RuntimeError, match="prepare"):
        model.discover()
    with pytest.raises(ValueError, match="no regions"):
        model.prepare([])
    known = make_model(n_known_classes=2)
    with pytest.raises(ValueError, match="no labeled regions"):
        known.prepare(regions[:4])
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        known.prepare(regions[:4], labeled_regions=regions[4:6], labeled_classes=[0, 2])
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        known.prepare(regions[:4], labeled_regions=regions[4:6], labeled_classes=[-1, 1])
    with pytest.raises(ValueError, match="2 labeled regions but 1 labels"):
        known.prepare(regions[:4], labeled_regions=regions[4:6], labeled_classes=[0])
    with pytest.raises(ValueError, match="lie in"):
        model.prepare(regions[:4], labeled_regions=regions[4:5], labeled_classes=[0])  # no known classes
    assert known.cache is None


def test_train_dataloader_of_an_unlabeled_set(trained):
    model, _, _ = trained
    loader = model.train_dataloader()
    assert loader.batch_size == 4
    assert loader.drop_last
    assert loader.sampler.weights is None  # one kind of region: a plain (seeded) shuffle
    batch = next(iter(loader))
    assert batch["tokens"].shape[:2] == (4, 2)
    assert batch["anomaly"].shape == (4, 2, 16)
    assert batch["label"].eq(-1).all()


# ---------------------------------------------------------------------------- training, discover


def test_training_changes_the_tail_and_heads_only(trained):
    model, _, before = trained
    after = model.model.state_dict()
    for name, value in before.items():
        if name.startswith("backbone.encoder."):  # weights and BatchNorm statistics of the frozen CNN
            assert torch.equal(after[name], value), name
    changed = [name for name, value in before.items() if not torch.equal(after[name], value)]
    assert any(name.startswith("backbone.blocks.") for name in changed)
    assert any(name.startswith("heads.") for name in changed)
    assert any(name.startswith("projector.") for name in changed)


def test_discover_shapes_and_consistency(trained, regions):
    model, result, _ = trained
    assert isinstance(result, ImageClassification)
    n_regions, n_images = len(regions), 6
    assert result.region_probabilities.shape == (n_regions, N_NOVEL)
    np.testing.assert_allclose(result.region_probabilities.sum(1), 1.0, rtol=1e-5)
    assert (result.region_probabilities >= 0).all()
    np.testing.assert_array_equal(result.region_classes, result.region_probabilities.argmax(1))
    assert result.probabilities.shape == (n_images, N_NOVEL)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result.classes, result.probabilities.argmax(1))
    np.testing.assert_allclose(result.confidence, result.probabilities.max(1))
    assert result.region_features.shape == (n_regions, model.network.out_dim)
    assert np.isfinite(result.region_features).all()
    assert 0 <= int(model.best_head) < N_HEADS
    assert result.region_descriptors is not None and len(result.region_descriptors) == n_regions
    # more images than regions refer to: those are reported as missing
    with pytest.raises(ValueError, match="without any region"):
        model.discover(n_images=n_images + 1)


def test_nothing_found_means_normal(trained, regions):
    model, result, _ = trained
    normal = np.eye(N_NOVEL)[model.normal_index]
    whole = np.array([region.whole_image for region in regions])
    assert whole.sum() == 2
    np.testing.assert_array_equal(result.region_probabilities[whole], np.stack([normal, normal]))
    assert result.classes[5] == model.normal_index
    assert result.confidence[5] == pytest.approx(1.0)
    # the other regions are classified by the network, not forced
    assert not np.isin(result.region_probabilities[~whole], [0.0, 1.0]).all()


def test_discover_matches_classify_regions_on_the_training_regions(trained, regions):
    model, result, _ = trained
    # the cache stores tokens in half precision, classify_regions recomputes them in float
    np.testing.assert_allclose(model.classify_regions(regions), result.region_probabilities, atol=2e-3)


def test_training_is_deterministic_with_a_seed(trained, regions):
    _, result, _ = trained
    _, again = trained_result(regions, seed=0)
    np.testing.assert_array_equal(again.region_probabilities, result.region_probabilities)
    np.testing.assert_array_equal(again.region_features, result.region_features)


def test_training_with_known_classes():
    unlabeled = region_list(n_defects=6, n_whole=2)
    labeled = region_list(n_defects=4, n_whole=0, start=20)
    classes = [0, 1, 0, 1]  # squares are class 0, stripes class 1
    seed_everything(0, verbose=False)
    model = make_model(n_known_classes=2)
    model.prepare(unlabeled, labeled_regions=labeled, labeled_classes=classes)
    assert model.labels.tolist() == [-1] * 8 + classes
    assert model.n_unlabeled == 8
    assert model.train_dataloader().sampler.weights is not None  # labeled and unlabeled balanced
    fit(model)
    result = model.discover()
    assert model.n_classes == 2 + N_NOVEL
    assert model.normal_index == 2
    assert result.region_probabilities.shape == (8, 5)  # unlabeled regions only
    assert result.probabilities.shape == (4, 5)
    np.testing.assert_array_equal(result.region_probabilities[6:], np.tile(np.eye(5)[2], (2, 1)))
    labeled_probabilities = model.classify_regions(labeled)
    assert labeled_probabilities.shape == (4, 5)
    np.testing.assert_allclose(labeled_probabilities.sum(1), 1.0, rtol=1e-5)


# ------------------------------------------------------------------- a region set, checkpoints


def blob(shape, centre, sigma, peak):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return peak * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


SHAPE = (64, 80)


def make_scene(root, n_images=8):
    """Images on disk with raw detector-like maps: two without a defect, the others one blob each."""
    images, maps, centres, paths = [], [], [], []
    for index in range(n_images):
        rng = np.random.default_rng(index)
        image = rng.integers(80, 120, size=(*SHAPE, 3), dtype=np.uint8)
        anomaly_map = rng.uniform(0, 0.3, size=SHAPE).astype(np.float32)
        centre = None
        if index >= 2:
            centre = (int(rng.integers(15, SHAPE[0] - 15)), int(rng.integers(15, SHAPE[1] - 15)))
            anomaly_map += blob(SHAPE, centre, 4, 2.0 + 0.2 * index).astype(np.float32)
            image[centre[0] - 5 : centre[0] + 5, centre[1] - 5 : centre[1] + 5] = 230 if index % 2 else 20
        path = root / f"{index:03d}.png"
        assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append(image)
        maps.append(anomaly_map)
        centres.append(centre)
        paths.append(path)
    return images, maps, centres, AnomalyMapSet.from_arrays(maps, paths)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    images, maps, centres, map_set = make_scene(root)
    region_set = extract_regions(map_set)
    seed_everything(0, verbose=False)
    model = make_model(epochs=1)
    model.prepare(region_set)
    trainer = fit(model, root=root, epochs=1)
    return {
        "root": root,
        "images": images,
        "maps": maps,
        "centres": centres,
        "regions": region_set,
        "model": model,
        "trainer": trainer,
    }


def test_region_set_scene_is_as_intended(scene):
    region_set = scene["regions"]
    assert len(region_set) == 8
    # the two images without a defect take the soft path: a region on their map's peak, which the
    # detector's calibrated evidence calls normal
    assert [region.source for region in region_set] == ["soft", "soft"] + ["region"] * 6
    assert all(region.anomalous_probability < 0.01 for region in region_set.regions[:2])
    assert region_set.calibration is not None and scene["model"].peak_calibration is region_set.calibration
    assert scene["model"].mebin is region_set.mebin
    assert region_set.mebin.is_fitted


def test_checkpoint_round_trip(scene, tmp_path):
    model, trainer, region_set = scene["model"], scene["trainer"], scene["regions"]
    saved_head = model.best_head.clone()
    model.best_head.fill_(N_HEADS - 1)  # not the default, so that restoring it is visible
    model.hparams["pretrained"] = True  # as a real run would be: loading must not fetch weights again
    try:
        path = tmp_path / "m.ckpt"
        trainer.save_checkpoint(path)
        expected = model.classify_regions(list(region_set))
    finally:
        model.hparams["pretrained"] = False
        model.best_head.copy_(saved_head)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["pretrained"] is False
    assert checkpoint["hyper_parameters"]["weights"] is None
    loaded = AnomalyNCD.load_from_checkpoint(path)
    assert int(loaded.best_head) == N_HEADS - 1
    assert loaded.cache is None  # the cache is not part of a checkpoint
    assert loaded.mebin is not None
    assert loaded.mebin is not region_set.mebin
    assert (loaded.mebin.min_th_, loaded.mebin.max_th_) == (region_set.mebin.min_th_, region_set.mebin.max_th_)
    assert loaded.mebin.kernel_size == region_set.mebin.kernel_size
    assert loaded.peak_calibration == region_set.calibration  # the soft path decides the same way
    assert loaded.view_settings == model.view_settings
    np.testing.assert_allclose(loaded.classify_regions(list(region_set)), expected, rtol=0, atol=1e-6)


def test_checkpoint_without_mebin_loads_without_one(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "plain.ckpt"
    model.trainer.save_checkpoint(path)
    assert "anomaly_ncd_mebin" not in torch.load(path, map_location="cpu", weights_only=True)
    assert AnomalyNCD.load_from_checkpoint(path).mebin is None


# --------------------------------------------------------------------------------- predict_step


def image_batch(images, maps, with_channel=False):
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    anomaly = torch.from_numpy(np.stack(maps))
    return ImageBatch(image=pixels, anomaly_map=anomaly[:, None] if with_channel else anomaly)


@pytest.mark.parametrize("with_channel", [False, True])
def test_predict_step_classifies_images_and_their_regions(scene, with_channel):
    model, region_set = scene["model"], scene["regions"]
    picks = [0, 3, 4, 7]
    batch = image_batch([scene["images"][i] for i in picks], [scene["maps"][i] for i in picks], with_channel)
    result = model.predict_step(batch, 0)
    assert isinstance(result, DiscoveryBatch)
    assert isinstance(result, ImageBatch)
    assert torch.equal(result.image, batch.image)
    assert result.pred_class.shape == (4,)
    assert result.class_confidence.shape == (4,)
    assert ((result.class_confidence >= 0) & (result.class_confidence <= 1)).all()
    assert result.class_probabilities.shape == (4, N_NOVEL)
    torch.testing.assert_close(result.class_probabilities.sum(1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(result.class_confidence, result.class_probabilities.max(1).values)
    assert torch.equal(result.pred_class, result.class_probabilities.argmax(1))
    for name in ("region_boxes", "region_classes", "region_confidences", "region_scores"):
        assert len(getattr(result, name)) == 4, name
    for row, index in enumerate(picks):
        n_regions = len(result.region_boxes[row])
        assert result.region_boxes[row].shape == (n_regions, 4)
        assert len(result.region_classes[row]) == len(result.region_confidences[row]) == n_regions
        assert len(result.region_scores[row]) == n_regions
        # the same map gives the same regions as the region stage did for the training set
        expected = region_set.of_image(index)
        assert result.region_boxes[row].tolist() == [list(region.box) for region in expected]
        np.testing.assert_allclose(result.region_scores[row].numpy(), [r.score for r in expected], atol=1e-6)
        np.testing.assert_array_equal(result.region_classes[row].numpy(), model.classify_regions(expected).argmax(1))
    # image 0 has no defect: its soft-path region sits on its map's (noise) peak, and the detector's
    # calibrated evidence makes it normal
    (box,) = result.region_boxes[0].tolist()
    assert box != [0, 0, SHAPE[1], SHAPE[0]]
    assert result.pred_class[0].item() == model.normal_index
    assert result.class_confidence[0].item() == pytest.approx(1.0, abs=1e-6)
    # the others get a box around their blob
    for row, index in enumerate(picks[1:], start=1):
        cy, cx = scene["centres"][index]
        x0, y0, x1, y1 = result.region_boxes[row][0].tolist()
        assert x0 <= cx < x1
        assert y0 <= cy < y1
        assert (x1 - x0) * (y1 - y0) < SHAPE[0] * SHAPE[1] / 4
        assert result.region_scores[row][0].item() > 0.5


def test_predict_step_errors(scene, trained):
    model = scene["model"]
    batch = image_batch(scene["images"][:2], scene["maps"][:2])
    batch.anomaly_map = None
    with pytest.raises(ValueError, match="anomaly_map"):
        model.predict_step(batch, 0)
    unfitted, _, _ = trained  # prepared with a plain list of regions: no MEBin range
    with pytest.raises(RuntimeError, match="MEBin"):
        unfitted.predict_step(image_batch(scene["images"][:2], scene["maps"][:2]), 0)


def test_checkpoint_of_a_model_built_with_settings_objects(regions, tmp_path):
    from anomalib_ncd.discovery.guidance import GuidanceSettings
    from anomalib_ncd.discovery.views import ViewSettings

    seed_everything(0, verbose=False)
    model = make_model(
        epochs=1, guidance=GuidanceSettings(mode="hard"), views=ViewSettings(size=64, resize=72, n_views=2)
    )
    model.prepare(regions[:4])
    trainer = fit(model, epochs=1)
    trainer.save_checkpoint(tmp_path / "settings.ckpt")
    loaded = AnomalyNCD.load_from_checkpoint(tmp_path / "settings.ckpt")
    assert loaded.guidance_settings == GuidanceSettings(mode="hard")


def test_soft_path_regions_are_classified_by_the_model_and_pulled_to_normal_by_their_score():
    seed_everything(0)
    regions = region_list(n_defects=8, n_whole=0)
    # the same crops again, as soft-path regions (MEBin found nothing): one at the set's weakest score,
    # one strong enough that the model alone decides
    for number, score in ((0, 0.0), (1, 0.6)):
        soft = make_region(number, "square")
        soft.image_index, soft.score, soft.source = 4 + number, score, "soft"
        regions.append(soft)
    model = make_model(epochs=1)
    model.prepare(regions)
    fit(model, epochs=1)
    found = model.discover()
    plain = model.classify_regions(regions)  # the same rule on the inference path
    # float16 cached tokens against freshly computed float32 ones (the anchor reads them directly)
    np.testing.assert_allclose(found.region_probabilities, plain, atol=1e-4)
    weakest, strong = found.region_probabilities[-2], found.region_probabilities[-1]
    assert weakest.argmax() == model.normal_index  # w = 0.5: normal whatever the model says
    model_only = model.classify_regions([make_region(1, "square")])[0]  # same crop, a MEBin region
    np.testing.assert_allclose(strong, model_only, atol=1e-5)  # score 0.6: w = 0
    assert found.classes[4] == model.normal_index


def test_nothing_found_setting_is_saved_and_checked(tmp_path):
    with pytest.raises(ValueError, match="nothing_found"):
        make_model(nothing_found="maybe")
    assert make_model().nothing_found == "soft"
    assert make_model(nothing_found="normal").hparams["nothing_found"] == "normal"


def test_resumed_training_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    regions = region_list(n_defects=8, n_whole=2)

    class KilledAfterFirstEpoch(Callback):
        """The process dies after epoch 1 of the same 3-epoch fit (its schedule is the full fit's)."""

        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    def trained(epochs, resume=None, checkpoint_dir=None):
        seed_everything(0)
        model = make_model(epochs=3)
        model.prepare(regions)
        callbacks = [ModelCheckpoint(dirpath=checkpoint_dir, save_last=True)] if checkpoint_dir else []
        if epochs < 3:
            callbacks.append(KilledAfterFirstEpoch())
        trainer = Trainer(
            max_epochs=3,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=bool(checkpoint_dir),
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        torch.manual_seed(99 if resume else 0)  # a resumed process starts from another global state
        trainer.fit(model, ckpt_path=resume)
        return model

    uninterrupted = trained(3)
    trained(1, checkpoint_dir=tmp_path / "ckpt")  # "killed" after its first epoch
    resumed = trained(3, resume=str(tmp_path / "ckpt" / "last.ckpt"))
    for name, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    expected, got = uninterrupted.discover(), resumed.discover()
    np.testing.assert_array_equal(expected.region_probabilities, got.region_probabilities)


@pytest.mark.parametrize(("engine_epochs", "expected"), [(2, 2), (None, 3)])
def test_engine_max_epochs_is_honoured(scene, tmp_path, engine_epochs, expected):
    """``Engine(max_epochs=2).fit(model)`` trains 2 epochs; without it, the model's ``training.epochs``."""
    from anomalib.engine import Engine

    seed_everything(0, verbose=False)
    model = make_model(epochs=3)
    model.prepare(scene["regions"])
    options = {} if engine_epochs is None else {"max_epochs": engine_epochs}
    engine = Engine(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False, **options)
    engine.fit(model)
    assert engine.trainer.current_epoch == expected
    assert model.lr_schedulers().T_max == expected  # the cosine follows the epochs trained
    assert len(model._teacher_temperatures) == expected


def test_fit_bounded_by_steps_only(regions, tmp_path):
    """``Trainer(max_steps=N)`` (Lightning then sets ``max_epochs=-1``) trains; it used to fail in setup."""
    seed_everything(0, verbose=False)
    model = make_model(epochs=3)
    model.prepare(regions)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert len(model._teacher_temperatures) == 3  # the model's training.epochs
    assert model.lr_schedulers().T_max == 3
