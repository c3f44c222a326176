"""The `anomalib-ncd regions` command: in-process on saved maps, errors as one line."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.cli import main


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_regions_on_saved_maps(dataset_with_maps, tmp_path, capsys):
    data, maps_dir, table = dataset_with_maps
    code = main(["regions", "--data", str(data), "--maps", str(maps_dir), "--output", str(tmp_path / "out")])
    assert code == 0
    run = tmp_path / "out" / "NCD" / "data" / "brick" / "latest"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images"] == int((table["split"] == "test").sum())
    regions = pd.read_csv(run / "regions" / "regions.csv")
    defect_regions = regions[regions["defect_type"] != "good"]
    assert not defect_regions["whole_image"].any()  # every defect image got a real region
    assert (run / "regions" / defect_regions["crop_file"].iloc[0]).is_file()
    assert "results in" in capsys.readouterr().out
    # a second run is a new version; the first stays intact
    assert main(["regions", "--data", str(data), "--maps", str(maps_dir), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "NCD" / "data" / "brick" / "v0" / "summary.json").is_file()
    assert (run.resolve().name) == "v1"


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["regions", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("anomalib-ncd: error:")
    assert "missing" in err[0]


def test_maps_that_do_not_match_images(dataset_with_maps, tmp_path, capsys):
    data, maps_dir, _ = dataset_with_maps
    stray = maps_dir / "good" / "999.png"
    cv2.imwrite(str(stray), np.zeros((8, 8), np.uint8))
    assert main(["regions", "--data", str(data), "--maps", str(maps_dir), "--output", str(tmp_path / "o")]) == 2
    assert "999" in capsys.readouterr().err


def test_ready_configs_parse(capsys):
    from pathlib import Path

    for config in sorted((Path(__file__).parents[3] / "configs").glob("regions_*.yaml")):
        with pytest.raises(SystemExit) as exit_info:
            main(["regions", "-c", str(config), "--print_config"])
        assert exit_info.value.code == 0
        assert "working_long_side: 256" in capsys.readouterr().out
