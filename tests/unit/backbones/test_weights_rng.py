"""Converting the offline weights leaves the global random state alone."""

import torch

from anomalib_ncd.backbones.offline_weights import CACHE_ENV, DEFAULT_BACKBONE, converted_weights_file


def test_conversion_does_not_touch_the_global_random_state(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "fresh"))
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    converted_weights_file(DEFAULT_BACKBONE)  # converts: builds a randomly initialised timm model
    assert (tmp_path / "fresh" / "weights").is_dir()
    assert torch.equal(torch.rand(4), expected)
