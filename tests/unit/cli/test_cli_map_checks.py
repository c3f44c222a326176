"""`discover` on saved maps: an image without a map is an error naming it, or skipped when asked."""

import pandas as pd

from anomalib_ncd.cli import main
from tests.unit.cli.test_cli_discover import discover_args, one_line_error


def test_discover_refuses_a_missing_map_unless_told(dataset_with_maps, tmp_path, capsys):
    data, maps, table = dataset_with_maps
    victim = next((maps / "crack").glob("*.png"))
    victim.unlink()
    assert main(discover_args(data, maps, tmp_path / "out")) == 2
    error = one_line_error(capsys)
    assert f"crack/{victim.stem}.png" in error
    assert "--detector.skip_missing_maps true" in error
    args = [*discover_args(data, maps, tmp_path / "out"), "--detector.skip_missing_maps", "true"]
    assert main(args) == 0
    assignments = pd.read_csv(tmp_path / "out" / "NCD" / "data" / "brick" / "latest" / "assignments.csv")
    assert len(assignments) == int((table["split"] == "test").sum()) - 1
