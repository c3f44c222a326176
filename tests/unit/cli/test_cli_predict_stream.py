"""`anomalib-ncd predict` streams images in chunks, writes each chunk atomically and resumes a killed run."""

import json

import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.cli import main
from anomalib_ncd.pipeline.estimator import DefectDiscovery
from anomalib_ncd.pipeline.tables import LIST_COLUMNS
from tests.unit.cli.test_cli_discover import finished_run  # noqa: F401  (the shared discover run)


def _predict(run, images, maps, output, *extra):
    return main(
        ["predict", "--run", str(run), "--images", str(images), "--maps", str(maps), "--output", str(output), *extra]
    )


def assert_same_predictions(got, expected):
    """Equal classes and names; scores equal up to float rounding (batches of other sizes sum in other orders)."""
    assert list(got.columns) == list(expected.columns)
    plain = [column for column in got.columns if column not in LIST_COLUMNS]
    pd.testing.assert_frame_equal(got[plain], expected[plain], check_exact=False, rtol=1e-4)
    for column in LIST_COLUMNS:
        for mine, theirs in zip(got[column], expected[column], strict=True):
            np.testing.assert_allclose(
                np.array(json.loads(mine), dtype=float), np.array(json.loads(theirs), dtype=float), rtol=1e-4
            )


@pytest.fixture(scope="module")
def whole(finished_run, tmp_path_factory):  # noqa: F811
    """The predict of every test image in one chunk: the reference the chunked runs must equal."""
    run, root, maps = finished_run["run"], finished_run["root"], finished_run["maps"]
    images = root / "data" / "brick" / "test"
    output = tmp_path_factory.mktemp("whole")
    assert _predict(run, images, maps, output, "--chunk_size", "1000") == 0
    return {"run": run, "images": images, "maps": maps, "table": pd.read_csv(output / "predictions.csv")}


def test_chunks_give_the_same_predictions_as_one_pass(whole, tmp_path):
    assert (
        _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "4", "--overlays", "true") == 0
    )
    chunked = pd.read_csv(tmp_path / "predictions.csv")
    assert_same_predictions(chunked, whole["table"])
    assert len(list((tmp_path / "overlays").glob("*.png"))) == len(chunked)  # numbered across chunks
    assert len(list((tmp_path / "parts").glob("part-*.csv"))) == -(-len(chunked) // 4)


def test_a_killed_predict_resumes_where_it_stopped(whole, tmp_path, monkeypatch, capsys):
    classify = DefectDiscovery.classify
    calls = []

    def killed_at_the_third_chunk(self, maps, batch_size=32):
        calls.append(len(maps))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill between writes) does
        return classify(self, maps, batch_size=batch_size)

    monkeypatch.setattr(DefectDiscovery, "classify", killed_at_the_third_chunk)
    assert _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "3") == 130
    err = capsys.readouterr().err
    assert "6 of" in err and f"--output {tmp_path}" in err
    assert err.count("resumes it") == 1  # one hint, not the command's and a generic one
    assert not (tmp_path / "predictions.csv").exists()
    assert len(list((tmp_path / "parts").glob("part-*.csv"))) == 2

    calls.clear()
    monkeypatch.setattr(
        DefectDiscovery,
        "classify",
        lambda self, maps, batch_size=32: calls.append(1) or classify(self, maps, batch_size),
    )
    assert _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "3") == 0
    n_chunks = -(-len(whole["table"]) // 3)
    assert len(calls) == n_chunks - 2  # only the chunks that were not written
    assert "resuming" in capsys.readouterr().out
    assert_same_predictions(pd.read_csv(tmp_path / "predictions.csv"), whole["table"])


def test_the_folder_of_another_predict_is_refused(whole, tmp_path, capsys):
    assert _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "3") == 0
    assert _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "5") == 2
    assert "holds a predict of other images" in capsys.readouterr().err


def test_a_chunk_size_below_one_is_a_clear_error(whole, tmp_path, capsys):
    assert _predict(whole["run"], whole["images"], whole["maps"], tmp_path, "--chunk_size", "0") == 2
    assert "chunk_size must be at least 1" in capsys.readouterr().err
