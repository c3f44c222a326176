"""Run folders: versions, the `latest` link (completed runs only), run state."""

from pathlib import Path

import pytest

from anomalib_ncd.results import (
    mark_latest,
    new_run_dir,
    next_version_dir,
    read_run_state,
    resolve_run,
    write_run_state,
)


def test_versions_count_up_and_latest_moves_only_when_marked(tmp_path):
    first = new_run_dir(tmp_path, "MTD")
    assert first == tmp_path / "NCD" / "MTD" / "all" / "v0"
    assert not (first.parent / "latest").exists()
    mark_latest(first)
    second = new_run_dir(tmp_path, "MTD")
    assert second.name == "v1"
    assert (first.parent / "latest").resolve() == first.resolve()  # v1 is not complete yet
    mark_latest(second)
    assert (first.parent / "latest").resolve() == second.resolve()
    assert not list(first.parent.glob(".latest*"))


def test_next_version_dir_skips_taken_numbers(tmp_path):
    (tmp_path / "v0").mkdir()
    (tmp_path / "v3").mkdir()
    (tmp_path / "notes").mkdir()
    assert next_version_dir(tmp_path).name == "v4"


def test_run_state_round_trip_and_resolve(tmp_path):
    run = new_run_dir(tmp_path, "x", "cat")
    with pytest.raises(FileNotFoundError, match="not an anomalib-ncd run folder"):
        resolve_run(run)
    write_run_state(run, stage="maps", complete=False)
    state = write_run_state(run, stage="done", complete=True)
    assert state == {"stage": "done", "complete": True}
    assert read_run_state(run) == state
    mark_latest(run)
    assert resolve_run(run.parent / "latest") == run.resolve()
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        resolve_run(tmp_path / "nope")


def test_the_run_folder_names_every_file_of_a_run_inside_it(tmp_path):
    from anomalib_ncd.results import RUN_STATE_FILE, RunFolder

    folder = RunFolder(tmp_path / "v0")
    paths = {
        "state": folder.state,
        "config": folder.config,
        "checkpoint": folder.checkpoint,
        "maps": folder.maps,
        "maps_index": folder.maps_index,
        "views": folder.views,
        "detector": folder.detector,
        "assignments": folder.assignments,
        "regions": folder.regions,
        "metrics": folder.metrics,
        "summary": folder.summary,
        "region_features": folder.region_features,
        "report": folder.report,
    }
    assert all(path.is_relative_to(tmp_path / "v0") for path in paths.values())
    assert len(set(paths.values())) == len(paths)  # no two names for one file
    assert folder.state.name == RUN_STATE_FILE
    assert folder.checkpoint.relative_to(folder.root) == Path("weights/lightning/model.ckpt")  # anomalib's layout
    assert RunFolder(str(tmp_path)).root == tmp_path  # a string is taken as a path
