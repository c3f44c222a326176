"""The soft path: a region for images where MEBin finds nothing, and the normal decision rule."""

import numpy as np
import pytest

from anomalib_ncd.maps.map_set import AnomalyMapSet
from anomalib_ncd.pipeline.tables import image_path_taken
from anomalib_ncd.regions.extract import extract_regions, regions_of_image
from anomalib_ncd.regions.mebin import MEBin
from anomalib_ncd.regions.soft import PeakCalibration, normal_weight, peak_blob, soft_path_probabilities


def test_peak_blob_is_the_half_maximum_component_of_the_peak():
    rng = np.random.default_rng(0)
    anomaly_map = rng.normal(0.0, 0.01, (64, 80)).astype(np.float32)
    anomaly_map[10:14, 20:30] += 1.0  # the peak's blob
    anomaly_map[40:44, 60:64] += 0.8  # a second, weaker blob: above half height but not connected
    anomaly_map[12, 25] += 0.5
    blob = peak_blob(anomaly_map)
    assert blob[10:14, 20:30].all()
    assert not blob[40:44, 60:64].any()
    assert blob.sum() == 40


def test_peak_blob_of_a_flat_or_nan_map_is_empty():
    assert not peak_blob(np.ones((8, 8), np.float32)).any()
    nan_map = np.full((8, 8), np.nan, np.float32)
    assert not peak_blob(nan_map).any()


def test_normal_weight_is_plc():
    assert normal_weight(0.0) == pytest.approx(0.5)
    assert normal_weight(0.2) == pytest.approx(0.3)
    assert normal_weight(0.7) == pytest.approx(0.0)


def test_soft_path_probabilities_change_only_soft_regions_and_sum_to_one():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(4), size=6).astype(np.float32)
    scores = np.array([0.0, 0.1, 0.3, 0.6, 0.0, 0.2])
    soft = np.array([True, True, True, True, False, False])
    corrected = soft_path_probabilities(probabilities, scores, soft, normal_index=1)
    np.testing.assert_allclose(corrected.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(corrected[~soft], probabilities[~soft])
    np.testing.assert_allclose(corrected[3], probabilities[3], atol=1e-7)  # score >= 0.5: the model alone
    assert corrected[0].argmax() == 1  # the set's weakest peak is normal whatever the model says
    w = 0.5 - 0.1
    np.testing.assert_allclose(corrected[1], w * np.eye(4)[1] + (1 - w) * probabilities[1], atol=1e-6)
    np.testing.assert_array_equal(soft_path_probabilities(probabilities, scores, soft, None), probabilities)


def _set_with_one_unsure_image():
    """Normal maps, one clear defect MEBin finds, one faint peak it does not (noise-level bump)."""
    rng = np.random.default_rng(2)
    maps = [rng.normal(0.2, 0.02, (64, 96)).astype(np.float32) for _ in range(6)]
    maps[0][20:40, 30:50] = 1.0  # a clear, stable region
    faint = maps[1]
    faint[51, 81] += 0.3  # a one-pixel bump: erosion removes it at every threshold
    images = [f"image_{i}.png" for i in range(len(maps))]
    return AnomalyMapSet.from_arrays(maps, images, image_shapes=[(128, 192)] * len(maps)), faint


def test_extract_regions_soft_path_gives_every_image_a_region_centred_on_its_peak():
    map_set, _ = _set_with_one_unsure_image()
    hard = extract_regions(map_set, load_crops=False, nothing_found="normal", progress=lambda _: None)
    soft = extract_regions(map_set, load_crops=False, nothing_found="soft", progress=lambda _: None)
    assert [r.source for r in hard.of_image(0)] == ["region"] == [r.source for r in soft.of_image(0)]
    assert hard.of_image(0)[0].box == soft.of_image(0)[0].box  # MEBin's regions are untouched
    assert [r.source for r in hard.of_image(1)] == ["none"]
    (faint,) = soft.of_image(1)
    assert faint.source == "soft" and not faint.whole_image and faint.area > 0
    x0, y0, x1, y1 = faint.box
    assert x0 <= 163 < x1 and y0 <= 103 < y1  # the bump at (81, 51) on the map, x2 on the image
    assert (x1 - x0) < 192 and (y1 - y0) < 128  # a crop around the evidence, not the whole image
    assert image_path_taken({r.source for r in soft.of_image(1)}) == "soft"
    assert image_path_taken({"none"}) == "none" and image_path_taken({"soft", "region"}) == "region"


def test_inference_path_takes_the_same_soft_region():
    map_set, faint = _set_with_one_unsure_image()
    regions = extract_regions(map_set, load_crops=False, nothing_found="soft", progress=lambda _: None)
    image = np.zeros((128, 192, 3), np.uint8)
    (one,) = regions_of_image(image, faint, regions.mebin, nothing_found="soft")
    assert one.source == "soft" and one.box == regions.of_image(1)[0].box
    assert one.crop.shape[:2] == (one.box[3] - one.box[1], one.box[2] - one.box[0])


def test_unknown_nothing_found_setting_is_refused():
    map_set, _ = _set_with_one_unsure_image()
    with pytest.raises(ValueError, match="nothing_found"):
        extract_regions(map_set, load_crops=False, nothing_found="guess", mebin=MEBin())


def test_peak_calibration_separates_a_sure_detector_and_hesitates_for_an_unsure_one():
    rng = np.random.default_rng(3)
    normal, anomalous = rng.normal(1.0, 0.05, 60), rng.normal(3.0, 0.3, 40)
    sure = PeakCalibration.fit(np.concatenate([normal, anomalous]))
    assert sure.means[0] < sure.means[1]
    assert sure.anomalous_probability(normal).max() < 0.01
    assert sure.anomalous_probability(anomalous).min() > 0.99
    assert sure.anomalous_probability(np.array([10.0, -10.0])).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    unsure = PeakCalibration.fit(rng.normal(1.0, 0.1, 100))  # one population: no clear split
    middle = unsure.anomalous_probability(np.array([1.0]))[0]
    assert 0.01 < middle < 0.99
    assert PeakCalibration.from_dict(sure.as_dict()) == sure
    flat = PeakCalibration.fit(np.ones(5))
    assert flat.anomalous_probability(np.array([1.0]))[0] == pytest.approx(0.5)


def test_soft_path_uses_the_detectors_evidence_and_falls_back_to_plc():
    probabilities = np.array([[0.1, 0.9], [0.1, 0.9], [0.1, 0.9]])
    soft = np.array([True, True, True])
    corrected = soft_path_probabilities(probabilities, np.zeros(3), soft, 0, np.array([0.0, 1.0, np.nan]))
    np.testing.assert_allclose(corrected[0], [1.0, 0.0])  # the detector says normal: normal
    np.testing.assert_allclose(corrected[1], probabilities[1])  # the detector says anomalous: the model
    np.testing.assert_allclose(corrected[2], [0.55, 0.45])  # unknown evidence: PLC with score 0 (w = 0.5)


def test_regions_the_detector_calls_normal_stand_for_no_anomaly():
    from anomalib_ncd.regions.crops import Region
    from anomalib_ncd.regions.soft import regions_without_anomaly

    regions = [
        Region(0, (0, 0, 4, 4), 0, 0.0, whole_image=True, source="none"),
        Region(1, (0, 0, 4, 4), 3, 0.1, source="soft", anomalous_probability=0.2),
        Region(2, (0, 0, 4, 4), 3, 0.1, source="soft", anomalous_probability=0.8),
        Region(3, (0, 0, 4, 4), 3, 0.9),
    ]
    assert regions_without_anomaly(regions).tolist() == [True, True, False, False]


def test_soft_regions_carry_the_calibrated_evidence():
    map_set, _ = _set_with_one_unsure_image()
    regions = extract_regions(map_set, load_crops=False, progress=lambda _: None)
    assert regions.calibration is not None
    (faint,) = regions.of_image(1)
    peak = float(map_set.aligned("auto")[1].max())
    assert faint.anomalous_probability == pytest.approx(float(regions.calibration.anomalous_probability(peak)))
    assert np.isnan(regions.of_image(0)[0].anomalous_probability)  # MEBin regions need no evidence
    hard = extract_regions(map_set, load_crops=False, nothing_found="normal", progress=lambda _: None)
    assert hard.calibration is None
