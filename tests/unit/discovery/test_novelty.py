"""Unknown-class rejection: scores, calibration, decisions, and their place in the model and its outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from anomalib_ncd.discovery.classification import ImageClassification
from anomalib_ncd.discovery.heads import PrototypeHeads
from anomalib_ncd.discovery.lightning_model import AnomalyNCD
from anomalib_ncd.discovery.novelty import (
    PROTOTYPE_SCORES,
    UNKNOWN,
    NoveltySettings,
    calibrate,
    calibrate_threshold,
    fused_image_scores,
    judge,
    unknown_scores,
)
from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.pipeline.tables import assignments_table, decode_list_column, region_table
from anomalib_ncd.regions.crops import Region
from anomalib_ncd.regions.extract import extract_regions
from tests.unit.discovery.test_model_lightning import fit, image_batch, make_model, make_scene, region_list

# ------------------------------------------------------------------------------------------ scores


def hand_made_heads() -> PrototypeHeads:
    """One head whose three prototypes are the first three axes of a 4-d space."""
    heads = PrototypeHeads(in_dim=4, n_classes=3, n_heads=1)
    with torch.no_grad():
        heads.weight.copy_(torch.eye(4)[:3][None])
    return heads


@pytest.mark.parametrize("score", PROTOTYPE_SCORES)
def test_a_prototype_is_most_typical_and_an_orthogonal_feature_unknown(score):
    heads = hand_made_heads()
    features = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # prototype 0 itself
            [0.8, 0.6, 0.0, 0.0],  # between prototypes 0 and 1
            [0.0, 0.0, 0.0, 1.0],  # orthogonal to every prototype
        ]
    )
    values = unknown_scores(heads(features)[0], score, temperature=0.1)
    assert values.shape == (3,)
    assert values.dtype == np.float32
    assert values[0] == values.min()
    assert values[2] == values.max()
    assert values[0] < values[2]


def test_score_formulas():
    cosines = np.array([[0.9, 0.1, -0.2], [0.3, 0.3, 0.3]], dtype=np.float32)
    logits = torch.from_numpy(cosines).double() / 0.1
    np.testing.assert_allclose(unknown_scores(cosines, "vmf", 0.1), -logits.max(1).values.numpy(), rtol=1e-6)
    energy = -0.1 * torch.logsumexp(logits, dim=1)
    np.testing.assert_allclose(unknown_scores(cosines, "energy", 0.1), energy.numpy(), rtol=1e-6)
    msp = 1 - torch.softmax(logits, dim=1).max(1).values
    np.testing.assert_allclose(unknown_scores(torch.from_numpy(cosines), "msp", 0.1), msp.numpy(), atol=1e-7)
    # large kappa * cos: no overflow
    assert np.isfinite(unknown_scores(cosines, "energy", 1e-4)).all()


def test_the_vmf_decision_does_not_depend_on_kappa():
    cosines = np.random.default_rng(0).uniform(-1, 1, size=(50, 4))
    decisions = []
    for temperature in (0.04, 0.1, 1.0):
        values = unknown_scores(cosines, "vmf", temperature)
        decisions.append(values > calibrate_threshold(values, 0.1))
    assert decisions[0].sum() == 5
    np.testing.assert_array_equal(decisions[0], decisions[1])
    np.testing.assert_array_equal(decisions[0], decisions[2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="score must be one of"):
        NoveltySettings(score="mahalanobis")
    with pytest.raises(ValueError, match="quantile"):
        NoveltySettings(quantile=0.0)
    with pytest.raises(ValueError, match="quantile"):
        calibrate_threshold(np.arange(3.0), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        unknown_scores(np.zeros((1, 2)), "vmf", 0.0)
    with pytest.raises(ValueError, match="score must be one of"):
        unknown_scores(np.zeros((1, 2)), "nope", 0.1)


# ------------------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(("n", "quantile", "above"), [(100, 0.05, 5), (20, 0.1, 2), (30, 0.05, 1), (7, 0.5, 3)])
def test_calibration_rejects_exactly_the_quantile_of_the_training_scores(n, quantile, above):
    scores = np.random.default_rng(n).permutation(np.linspace(-3, 2, n)).astype(np.float32)
    threshold = calibrate_threshold(scores, quantile)
    assert int((scores > threshold).sum()) == above
    assert threshold in scores  # an actual training score, stored exactly in a float32 buffer


def test_calibration_ignores_nan_and_gives_nan_without_scores():
    scores = np.array([np.nan, 1.0, 2.0, 3.0, 4.0, np.nan], dtype=np.float32)
    assert calibrate_threshold(scores, 0.25) == 3.0
    assert np.isnan(calibrate_threshold(np.full(3, np.nan), 0.05))


def test_calibrate_leaves_whole_image_regions_out():
    scores = np.array([100.0, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    whole = np.array([True, False, False, False, False])
    region, image = calibrate(scores, whole, np.ones(5), np.array([7, 8, 9, 10, 11]), 50.0, 0.25)
    assert region == 3.0  # the whole-image region's 100 took no part
    assert image == 3.0  # one region per image: the same scores
    region, image = calibrate(scores, np.ones(5, bool), np.ones(5), np.arange(5), 50.0, 0.25)
    assert np.isnan(region)
    assert np.isnan(image)


# --------------------------------------------------------------------------------------- decisions


def test_images_fuse_their_regions_scores_like_their_classes():
    scores = np.array([1.0, 3.0, 5.0, np.nan], dtype=np.float32)
    fused = fused_image_scores(scores, np.array([100, 100, 9, 50]), np.array([0, 0, 1, 2]), 3, 50.0)
    assert fused[0] == pytest.approx(2.0)  # equal areas: the mean
    assert fused[1] == pytest.approx(5.0)
    assert np.isnan(fused[2])  # nothing scored in image 2
    # a tiny temperature keeps the largest region only
    small = fused_image_scores(scores[:2], np.array([400, 100]), np.array([0, 0]), 1, 1e-3)
    assert small[0] == pytest.approx(1.0)


def test_whole_image_regions_are_never_unknown():
    scores = np.array([1e6, 0.0, 9.0], dtype=np.float32)
    whole = np.array([True, False, False])
    verdict = judge(scores, whole, np.array([1, 4, 4]), np.array([0, 1, 1]), 2, 50.0, (1.0, 1.0))
    assert verdict.region_unknown.tolist() == [False, False, True]
    assert np.isnan(verdict.region_scores[0])
    assert np.isnan(verdict.image_scores[0])
    assert verdict.image_unknown.tolist() == [False, True]  # (0 + 9) / 2 > 1
    # the inputs are not modified
    assert scores[0] == 1e6


def test_uncalibrated_or_disabled_rejects_nothing():
    scores = np.array([5.0, 6.0], dtype=np.float32)
    args = (scores, np.zeros(2, bool), np.ones(2), np.array([0, 1]), 2, 50.0)
    assert not judge(*args, (float("nan"), float("nan"))).image_unknown.any()
    disabled = judge(*args, (0.0, 0.0), enabled=False)
    assert not disabled.region_unknown.any()
    assert not disabled.image_unknown.any()
    np.testing.assert_array_equal(disabled.region_scores, scores)


# --------------------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def trained():
    regions = region_list()  # 10 defect regions in 5 images, image 5 has 2 whole-image regions
    seed_everything(0, verbose=False)
    model = make_model(novelty={"quantile": 0.3})
    model.prepare(regions)
    fit(model)
    return model, regions


def test_training_calibrates_the_thresholds_on_the_training_regions(trained):
    model, regions = trained
    region_threshold, image_threshold = float(model.unknown_threshold), float(model.unknown_image_threshold)
    assert np.isfinite(region_threshold)
    assert np.isfinite(image_threshold)
    assert model.calibrate_novelty() == (region_threshold, image_threshold)  # deterministic
    result = model.discover()
    whole = np.array([region.whole_image for region in regions])
    assert int(result.region_is_unknown.sum()) == 3  # floor(0.3 * 10) of the 10 defect regions
    assert not result.region_is_unknown[whole].any()
    assert np.isnan(result.region_unknown_score[whole]).all()
    np.testing.assert_array_equal(result.region_is_unknown, result.region_unknown_score > region_threshold)
    assert int(result.is_unknown.sum()) == 1  # floor(0.3 * 5) of the 5 images with a defect
    assert not result.is_unknown[5]
    assert result.unknown_score.shape == (6,)
    # new regions are judged like the training ones
    found = model._verdict(result.region_features, whole, np.array([r.area for r in regions]), np.arange(12) // 2, 6)
    np.testing.assert_array_equal(found.region_unknown, result.region_is_unknown)


def test_novelty_settings_are_plain_data_in_the_settings(trained):
    model, _ = trained
    assert model.novelty_settings == NoveltySettings(quantile=0.3)
    settings = model.settings_dict()["novelty"]
    assert settings["score"] == "vmf"
    assert settings["threshold"] == pytest.approx(float(model.unknown_threshold))
    with pytest.raises(TypeError, match="NoveltySettings"):
        make_model(novelty=0.05)


def test_disabled_novelty_keeps_scores_and_rejects_nothing(trained):
    model, _ = trained
    disabled = make_model(novelty={"enabled": False})
    disabled.load_state_dict(model.state_dict())
    disabled.cache, disabled.labels, disabled.n_unlabeled = model.cache, model.labels, model.n_unlabeled
    result = disabled.discover()
    assert not result.region_is_unknown.any()
    assert not result.is_unknown.any()
    np.testing.assert_allclose(result.region_unknown_score, model.discover().region_unknown_score)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("novelty_scene")
    images, maps, _, map_set = make_scene(root)
    region_set = extract_regions(map_set)
    seed_everything(0, verbose=False)
    model = make_model(epochs=1, novelty={"quantile": 0.5})
    model.prepare(region_set)
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", filename="model")
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model)
    return {"model": model, "trainer": trainer, "images": images, "maps": maps, "map_set": map_set, "root": root}


def test_the_checkpoint_written_in_training_holds_the_thresholds(scene):
    model = scene["model"]
    state = torch.load(scene["root"] / "ckpt" / "model.ckpt", map_location="cpu", weights_only=True)
    assert float(state["state_dict"]["unknown_threshold"]) == float(model.unknown_threshold)
    assert float(state["state_dict"]["unknown_image_threshold"]) == float(model.unknown_image_threshold)
    assert state["hyper_parameters"]["novelty"] == {"enabled": True, "score": "vmf", "quantile": 0.5, "k": 5}


def test_checkpoint_round_trip_keeps_the_thresholds(scene, tmp_path):
    model, trainer = scene["model"], scene["trainer"]
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = AnomalyNCD.load_from_checkpoint(path)
    assert float(loaded.unknown_threshold) == float(model.unknown_threshold)
    assert float(loaded.unknown_image_threshold) == float(model.unknown_image_threshold)
    assert loaded.novelty_settings == model.novelty_settings
    expected = model.classify_images(scene["images"], scene["maps"])
    again = loaded.classify_images(scene["images"], scene["maps"])
    np.testing.assert_array_equal(again.is_unknown, expected.is_unknown)
    np.testing.assert_array_equal(again.region_is_unknown, expected.region_is_unknown)
    # a checkpoint from before unknown rejection loads uncalibrated: nothing is rejected
    old = torch.load(path, map_location="cpu", weights_only=True)
    for name in ("unknown_threshold", "unknown_image_threshold"):
        del old["state_dict"][name]
    del old["hyper_parameters"]["novelty"]
    torch.save(old, tmp_path / "old.ckpt")
    legacy = AnomalyNCD.load_from_checkpoint(tmp_path / "old.ckpt")
    assert np.isnan(float(legacy.unknown_threshold))
    assert not legacy.classify_images(scene["images"], scene["maps"]).is_unknown.any()


def test_classify_images_and_predict_step_carry_the_verdict(scene):
    model = scene["model"]
    found = model.classify_images(scene["images"], scene["maps"])
    n_images, n_regions = len(scene["images"]), len(found.regions)
    assert found.unknown_score.shape == found.is_unknown.shape == (n_images,)
    assert found.region_unknown_score.shape == found.region_is_unknown.shape == (n_regions,)
    whole = np.array([region.whole_image for region in found.regions])
    assert not found.region_is_unknown[whole].any()
    assert not found.is_unknown[:2].any()  # images 0 and 1: nothing found, normal
    assert np.isnan(found.unknown_score[:2]).all()
    assert found.is_unknown.any()  # half the training images lie above the image threshold
    picks = [0, 3, 4, 7]
    result = model.predict_step(image_batch([scene["images"][i] for i in picks], [scene["maps"][i] for i in picks]), 0)
    np.testing.assert_array_equal(result.is_unknown.numpy(), found.is_unknown[picks])
    np.testing.assert_allclose(result.unknown_score.numpy(), found.unknown_score[picks], atol=1e-5)
    assert result.is_unknown.dtype == torch.bool
    for row, index in enumerate(picks):
        rows = found.rows_of_image(index)
        np.testing.assert_array_equal(result.region_is_unknown[row].numpy(), found.region_is_unknown[rows])
        assert len(result.region_unknown_scores[row]) == len(result.region_boxes[row])


# ------------------------------------------------------------------------------------------ tables


def hand_classification() -> tuple[AnomalyMapSet, ImageClassification]:
    """Three images: nothing found, one known region, one unknown region next to a known one."""
    map_set = AnomalyMapSet.from_arrays(
        [np.zeros((4, 4), np.float32)] * 3, ["a.png", "b.png", "c.png"], image_shapes=[(4, 4)] * 3
    )
    regions = [
        Region(image_index=0, box=(0, 0, 4, 4), area=0, score=0.0, whole_image=True),
        Region(image_index=1, box=(0, 0, 2, 2), area=4, score=0.5, whole_image=False),
        Region(image_index=2, box=(0, 0, 3, 3), area=9, score=0.9, whole_image=False),
        Region(image_index=2, box=(3, 3, 4, 4), area=1, score=0.4, whole_image=False),
    ]
    found = ImageClassification(
        classes=np.array([0, 1, 2]),
        confidence=np.array([1.0, 0.8, 0.6]),
        probabilities=np.array([[1.0, 0.0, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),
        regions=regions,
        region_probabilities=np.array([[1.0, 0, 0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]]),
        region_features=np.zeros((4, 2)),
        region_unknown_score=np.array([np.nan, -8.0, -2.0, -7.0], dtype=np.float32),
        region_is_unknown=np.array([False, False, True, False]),
        unknown_score=np.array([np.nan, -8.0, -3.0], dtype=np.float32),
        is_unknown=np.array([False, False, True]),
    )
    return map_set, found


def test_tables_name_unknown_images_and_regions_and_keep_the_nearest_class():
    map_set, found = hand_classification()
    names = ["normal", "novel_1", "novel_2"]
    images = assignments_table(map_set, found, names)
    assert images["unknown"].tolist() == [False, False, True]
    assert images["class_name"].tolist() == ["normal", "novel_1", UNKNOWN]
    assert images["pred_class"].tolist() == [0, 1, 2]  # the nearest class stays
    assert np.isnan(images["unknown_score"][0])
    assert images["unknown_score"][2] == pytest.approx(-3.0)
    assert decode_list_column(images, "region_unknown") == [[], [False], [True, False]]
    assert decode_list_column(images, "region_unknown_scores")[2] == [-2.0, -7.0]
    regions = region_table(map_set, found, names)
    assert regions["unknown"].tolist() == [False, False, True, False]
    assert regions["class_name"].tolist() == ["normal", "novel_1", UNKNOWN, "novel_1"]
    assert regions["pred_class"].tolist() == [0, 1, 2, 1]
    # the CSV and JSON forms read back
    again = pd.read_csv(pd.io.common.StringIO(images.to_csv(index=False)))
    assert again["unknown"].tolist() == [False, False, True]
    records = json.loads(images.to_json(orient="records"))
    assert records[0]["unknown_score"] is None
    assert records[2]["unknown"] is True


def test_tables_of_a_classification_without_verdict():
    map_set, found = hand_classification()
    found.region_unknown_score = found.region_is_unknown = found.unknown_score = found.is_unknown = None
    images = assignments_table(map_set, found, ["normal", "novel_1", "novel_2"])
    assert not images["unknown"].any()
    assert images["unknown_score"].isna().all()
    assert images["class_name"].tolist() == ["normal", "novel_1", "novel_2"]


# ------------------------------------------------------------------------- estimator and report


def test_the_estimator_calibrates_in_fit_and_its_tables_and_report_show_unknown(tmp_path):
    from anomalib_ncd import DefectDiscovery

    _, _, _, map_set = make_scene(tmp_path)
    seed_everything(0, verbose=False)
    discovery = DefectDiscovery(make_model(epochs=1, novelty={"quantile": 0.5}), root_dir=tmp_path, progress=False)
    discovery.fit(map_set)
    model = discovery.model_
    assert np.isfinite(float(model.unknown_threshold))
    table = discovery.assignments_
    assert {"unknown", "unknown_score", "region_unknown", "region_unknown_scores"} <= set(table.columns)
    assert int(table["unknown"].sum()) == 3  # floor(0.5 * 6) of the six images with a defect
    assert (table.loc[table["unknown"], "class_name"] == UNKNOWN).all()
    assert not table["unknown"][:2].any()  # nothing found: normal
    regions = discovery.region_table()
    assert {"unknown", "unknown_score"} <= set(regions.columns)
    predicted = discovery.predict(map_set)
    assert {"unknown", "unknown_score"} <= set(predicted.columns)
    html = discovery.write_report(tmp_path / "report").read_text(encoding="utf-8")
    section = html[html.index('<section id="unknown"') :]
    assert "showing 3 of 3 images" in section[: section.index("</section>")]
    assert "<b>3</b>unknown images" in html
    assert "unknown score" in html


def test_a_report_without_unknown_column_has_no_unknown_section(tmp_path):
    from anomalib_ncd.report import write_report
    from tests.unit.report.conftest import build_report_data

    html = write_report(build_report_data(tmp_path / "images"), tmp_path / "report").read_text(encoding="utf-8")
    assert 'id="unknown"' not in html
    data = build_report_data(tmp_path / "images")
    data.images["unknown"] = False
    data.images["unknown_score"] = np.nan
    html = write_report(data, tmp_path / "again").read_text(encoding="utf-8")
    assert "No image scored above the unknown threshold" in html
