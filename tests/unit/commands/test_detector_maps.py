"""The Patchcore ``discover`` trains maps its test images in the fit's validation pass, once."""

import numpy as np
import pytest

from anomalib_ncd.commands.detector_maps import DetectorSettings, detector_maps_of, train_patchcore
from anomalib_ncd.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    # odd aspect ratio, so the letterbox crop-back is exercised too
    table = generate_synthetic_dataset(
        root, "brick", image_size=(96, 160), n_train_good=6, n_test_good=3, n_per_type=2, seed=5
    )
    settings = DetectorSettings(image_size=64, coreset_sampling_ratio=0.1)  # the offline ImageNet weights
    model, checkpoint, size, validated = train_patchcore(settings, table, "synthetic", "brick", root, "cpu", 1, 0)
    return table, model, size, validated, checkpoint


def test_the_validation_pass_gives_the_maps_a_second_pass_would(trained):
    table, model, size, validated, _ = trained
    test = table[table["split"] == "test"]
    assert validated is not None
    again = detector_maps_of(model, test, "synthetic", "brick", size, True, "cpu", 1)
    assert validated.image_paths == again.image_paths
    assert validated.defect_types == again.defect_types
    np.testing.assert_allclose(validated.scores, again.scores, rtol=1e-5)
    for first, second in zip(validated.maps, again.maps, strict=True):
        assert first.shape == second.shape == (38, 64)  # the letterboxed 64 px input's content: 96 x 160 scaled
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_the_checkpoint_still_has_the_thresholds_of_the_validation_pass(trained):
    import torch
    from anomalib.models import Patchcore

    from anomalib_ncd.checkpoints import read_checkpoint

    _, _, _, _, checkpoint = trained
    state = read_checkpoint(checkpoint, model_class=Patchcore)["state_dict"]
    threshold = [value for key, value in state.items() if key.endswith("post_processor._image_threshold")]
    assert threshold
    assert torch.isfinite(threshold[0]).all()
