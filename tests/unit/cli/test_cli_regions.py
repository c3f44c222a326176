"""The `anomalib-ncd regions` command: in-process on saved maps, errors as one line."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.cli import main
from anomalib_ncd.data import generate_synthetic_dataset


@pytest.fixture
def dataset_with_maps(tmp_path):
    table = generate_synthetic_dataset(
        tmp_path / "data", "brick", image_size=(96, 128), n_train_good=2, n_test_good=3, n_per_type=2, seed=1
    )
    maps_dir = tmp_path / "maps"
    for row in table[table["split"] == "test"].itertuples():
        truth = np.zeros((96, 128), np.float32)
        if row.mask_path:
            truth = (cv2.imread(row.mask_path, cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)
        # a detector-like map: blurred truth on weak noise, saved as 8-bit PNG like the AnomalyNCD authors' maps
        blurred = cv2.GaussianBlur(truth, (0, 0), 4)  # as smooth as Patchcore maps
        noisy = (
            blurred / max(float(blurred.max()), 1e-6)
            + np.random.default_rng(0).random((96, 128), dtype=np.float32) * 0.05
        )
        target = maps_dir / row.defect_type / f"{row.image_path.rsplit('/', 1)[1].rsplit('.', 1)[0]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), np.clip(noisy * 255, 0, 255).astype(np.uint8))
    return tmp_path / "data" / "brick", maps_dir, table


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
