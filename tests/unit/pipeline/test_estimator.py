"""DefectDiscovery: fit / predict on a small scene of images with raw detector-like maps."""

import logging

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import seed_everything

from anomalib_ncd import AnomalyMapSet, DefectDiscovery, NothingToDiscoverError
from anomalib_ncd.pipeline.estimator import as_map_set
from anomalib_ncd.pipeline.tables import decode_list_column
from anomalib_ncd.regions.mebin import MEBin
from tests.unit.discovery.test_model_lightning import SHAPE, make_model, make_scene


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimator")
    _, _, centres, map_set = make_scene(root)
    seed_everything(0, verbose=False)
    given = make_model(epochs=2)
    before = {name: value.clone() for name, value in given.state_dict().items()}
    mebin = MEBin()
    discovery = DefectDiscovery(given, mebin, checkpoint_dir=root / "ckpt", root_dir=root, progress=False)
    discovery.fit(map_set)
    return {
        "discovery": discovery,
        "map_set": map_set,
        "root": root,
        "centres": centres,
        "given": given,
        "before": before,
        "mebin": mebin,
    }


def test_fit_leaves_the_model_and_mebin_given_untouched(fitted):
    """scikit-learn's convention: fit trains a copy (``model_``); the parameters stay as given."""
    discovery, given = fitted["discovery"], fitted["given"]
    assert discovery.model is given
    assert discovery.model_ is not given
    after = given.state_dict()
    assert after.keys() == fitted["before"].keys()
    for name, value in fitted["before"].items():
        assert torch.equal(after[name], value) or (value.isnan().all() and after[name].isnan().all()), name
    assert not bool(given.prototypes_initialised)
    trained = discovery.model_.state_dict()
    assert any(not torch.allclose(trained[name], value, equal_nan=True) for name, value in fitted["before"].items())
    assert discovery.mebin is fitted["mebin"]
    assert not fitted["mebin"].is_fitted  # the fitted copy is the regions'
    assert discovery.regions_.mebin.is_fitted


def test_the_estimator_clones_and_takes_parameters_like_scikit_learn(tmp_path):
    from sklearn.base import clone

    model = make_model(epochs=1)
    discovery = DefectDiscovery(model, root_dir=tmp_path, progress=False, engine_options={"precision": 32})
    params = discovery.get_params()
    assert params["model"] is model
    assert params["engine_options"] == {"precision": 32}
    assert set(params) == {
        "model", "mebin", "accelerator", "devices", "strategy", "num_nodes", "checkpoint_dir", "root_dir",
        "progress", "engine_options", "class_count", "view_cache_dir",
    }  # fmt: skip
    copied = clone(discovery)
    assert copied.model is not model
    assert copied.get_params()["root_dir"] == tmp_path
    assert type(copied.model) is type(model) and copied.model.n_classes == model.n_classes
    assert discovery.set_params(progress=True) is discovery and discovery.progress
    with pytest.raises(ValueError, match="not a parameter"):
        discovery.set_params(epochs=3)


def test_fit_gives_one_row_per_image(fitted):
    discovery, map_set = fitted["discovery"], fitted["map_set"]
    table = discovery.assignments_
    assert list(table["image_path"]) == map_set.image_paths
    assert table["pred_class"].between(0, 2).all()
    assert list(table["class_name"]) == [discovery.model_.class_names[c] for c in table["pred_class"]]
    # images 0 and 1 have no defect: no MEBin region; the soft path classifies their map's peak, and
    # their weak detector score makes them normal
    assert list(table["path_taken"][:2]) == ["soft", "soft"]
    assert list(table["class_name"][:2]) == ["normal", "normal"]
    assert (table["path_taken"][2:] == "region").all()
    assert (table["n_regions"] >= 1).all()
    boxes = decode_list_column(table, "region_boxes")
    for (cy, cx), image_boxes in zip(fitted["centres"][2:], boxes[2:], strict=True):
        assert any(x0 <= cx < x1 and y0 <= cy < y1 for x0, y0, x1, y1 in image_boxes)
    assert discovery.checkpoint_path_.is_file()
    assert discovery.checkpoint_path_.parent == fitted["root"] / "ckpt"
    assert [path.name for path in (fitted["root"] / "ckpt").iterdir()] == ["model.ckpt"]  # no partial file left


def test_predict_on_the_fit_set_repeats_the_fit_classes(fitted):
    discovery, map_set = fitted["discovery"], fitted["map_set"]
    predicted = discovery.predict(map_set)
    np.testing.assert_array_equal(predicted["pred_class"], discovery.assignments_["pred_class"])
    np.testing.assert_allclose(predicted["confidence"], discovery.assignments_["confidence"], atol=1e-4)
    assert list(predicted["region_boxes"]) == list(discovery.assignments_["region_boxes"])


def test_region_table_matches_the_assignments(fitted):
    discovery = fitted["discovery"]
    regions = discovery.region_table()
    assert len(regions) == len(discovery.regions_)
    counts = regions[~regions["whole_image"]].groupby("image_index").size()
    assert counts.sum() == discovery.assignments_["n_regions"].sum()


def test_engine_predictions_are_accepted(fitted, caplog):
    map_set = fitted["map_set"]
    batches = [
        ImageBatch(
            image=torch.zeros(2, 3, *SHAPE),
            anomaly_map=torch.from_numpy(np.stack(map_set.maps[i : i + 2]))[:, None],
            pred_score=torch.tensor([0.1, 0.9]),
            image_path=map_set.image_paths[i : i + 2],
        )
        for i in range(0, len(map_set), 2)
    ]
    converted = as_map_set(batches)
    assert converted.image_paths == map_set.image_paths
    for mine, theirs in zip(converted.maps, map_set.maps, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert converted.scores[:2] == pytest.approx([0.1, 0.9])
    predicted = fitted["discovery"].predict(batches)
    np.testing.assert_array_equal(predicted["pred_class"], fitted["discovery"].assignments_["pred_class"])
    # maps clipped by anomalib's post-processor get a warning
    pairs = zip(map_set.maps, map_set.image_paths, strict=True)
    clipped = [{"anomaly_map": np.clip(m, 0, 1)[None], "image_path": [p]} for m, p in pairs]
    with caplog.at_level(logging.WARNING):
        as_map_set(clipped)
    assert "clipped" in caplog.text


def test_a_set_without_anomaly_is_refused(tmp_path):
    _, _, _, map_set = make_scene(tmp_path, n_images=3)
    flat = AnomalyMapSet.from_arrays([np.full(SHAPE, 0.2, np.float32)] * 3, map_set.image_paths)
    with pytest.raises(NothingToDiscoverError, match="no anomaly was found in any of the 3 images"):
        DefectDiscovery(make_model(), progress=False, root_dir=tmp_path).fit(flat)


def test_more_classes_than_regions_is_refused(tmp_path):
    _, _, _, map_set = make_scene(tmp_path, n_images=4)  # two images with one blob each
    with pytest.raises(NothingToDiscoverError, match="3 classes to discover but only 2 anomalous regions"):
        DefectDiscovery(make_model(), progress=False, root_dir=tmp_path).fit(map_set)


def test_fit_resumes_from_a_checkpoint(fitted, tmp_path):
    discovery, map_set = fitted["discovery"], fitted["map_set"]
    checkpoint = torch.load(discovery.checkpoint_path_, weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == 1
    seed_everything(0, verbose=False)
    longer = DefectDiscovery(make_model(epochs=3), checkpoint_dir=tmp_path, root_dir=tmp_path, progress=False)
    longer.fit(map_set, resume_from=discovery.checkpoint_path_)
    resumed = torch.load(longer.checkpoint_path_, weights_only=True, map_location="cpu")
    assert resumed["epoch"] == 2  # one more epoch, not three
    # the resumed model started from the saved prototypes, not from a new initialisation
    assert bool(resumed["state_dict"]["prototypes_initialised"])


def test_an_attached_detector_stays_out_of_the_checkpoint():
    model = make_model()
    keys = set(model.state_dict())
    detector = torch.nn.Linear(2, 2).train()
    model.detector = detector
    assert model.detector is detector
    assert not detector.training  # used for inference only
    assert set(model.state_dict()) == keys
    assert "detector" not in dict(model.named_children())
    model.detector = None
    assert model.detector is None


def test_add_batch_keeps_the_class_names_of_old_classes(fitted):
    discovery, map_set = fitted["discovery"], fitted["map_set"]
    names = list(discovery.model_.class_names)
    table = discovery.add_batch(map_set, n_new_classes=0)  # the fit set again: nothing new to append
    assert discovery.model_.class_names == names
    assert set(table["class_name"]) <= set(names)
    assert discovery.last_update_.new_classes == []


def test_ground_truth_regions_fit_and_report(tmp_path):
    """Regions cut from ground-truth masks have no MEBin: the report still renders (it read MEBin's range)."""
    from anomalib_ncd.data import generate_synthetic_dataset
    from anomalib_ncd.regions.extract import ground_truth_regions

    table = generate_synthetic_dataset(tmp_path / "data", "brick", image_size=(64, 96), n_per_type=2, n_test_good=2)
    test = table[table["split"] == "test"].reset_index(drop=True)
    regions = ground_truth_regions(test)
    assert regions.mebin is None
    seed_everything(0, verbose=False)
    discovery = DefectDiscovery(make_model(epochs=1), root_dir=tmp_path, progress=False).fit(regions)
    report = discovery.write_report(tmp_path / "report")
    assert report.is_file()
    assert "defect classes" in report.read_text()


def test_fit_without_a_checkpoint_callback(tmp_path):
    """``barebones`` Lightning has no checkpoint callback: the fit used to fail reading its best path."""
    from pathlib import Path

    _, _, _, map_set = make_scene(tmp_path)
    seed_everything(0, verbose=False)
    discovery = DefectDiscovery(
        make_model(epochs=1),
        root_dir=tmp_path,
        progress=False,
        engine_options={"barebones": True, "enable_model_summary": False},
    )
    discovery.fit(map_set)
    assert discovery.checkpoint_path_ == Path()
    assert len(discovery.assignments_) == len(map_set)
