"""The same seed gives the same run with a fresh and with a warm offline-weights cache."""

import numpy as np
import pandas as pd
from timm.models import _registry as timm_registry

from anomalib_ncd.backbones.offline_weights import CACHE_ENV, DEFAULT_BACKBONE, converted_weights_file
from anomalib_ncd.cli import main
from tests.unit.cli.test_cli_discover import discover_args


def test_same_seed_same_assignments_with_a_fresh_and_a_warm_cache(dataset_with_maps, tmp_path, monkeypatch):
    data, maps, _ = dataset_with_maps
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "warm"))
    converted_weights_file(DEFAULT_BACKBONE)
    tables = []
    for cache in ("fresh", "warm"):
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / cache))
        names = dict(timm_registry._model_pretrained_cfgs)
        names.pop(DEFAULT_BACKBONE, None)
        monkeypatch.setattr(timm_registry, "_model_pretrained_cfgs", names)  # a new process: nothing registered
        output = tmp_path / f"out_{cache}"
        assert main(discover_args(data, maps, output, "--backbone", DEFAULT_BACKBONE)) == 0
        tables.append(pd.read_csv(output / "NCD" / "data" / "brick" / "latest" / "assignments.csv"))
    assert (tmp_path / "fresh" / "weights").is_dir()
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert np.isfinite(tables[0]["confidence"]).all()
