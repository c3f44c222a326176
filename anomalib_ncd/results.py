"""Results folders in anomalib's layout: ``<root>/NCD/<dataset>/<category>/vN`` plus a ``latest`` link.

``latest`` moves only when a run completes (:func:`mark_latest`), so a failed or interrupted run
never hides the last good one. Each run records its progress in ``run.json``
(:func:`write_run_state`), which is how an interrupted run is found and resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_ncd.io import atomic_write_text

_VERSION = re.compile(r"^v(\d+)$")
RUN_STATE_FILE = "run.json"
REGION_FEATURES_FILE = "region_features.npy"  # the regions' features, for the embedding of a later report


@dataclass(frozen=True)
class RunFolder:
    """Every path of one run folder (``<root>/NCD/<dataset>/<category>/vN``): the layout in one place.

    Commands read and write a run only through these names, so the layout cannot drift between
    ``discover``, ``add``, ``review``, ``predict``, ``export`` and ``evaluate``.

    Attributes:
        root: the run folder.
    """

    root: Path

    CHECKPOINT = Path("weights") / "lightning" / "model.ckpt"  # anomalib's checkpoint layout
    CONFIG = "config.yaml"
    MAPS = "maps"
    VIEWS = "views"
    DETECTOR = "detector"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def state(self) -> Path:
        """``run.json``: the run's progress and settings (:func:`write_run_state`)."""
        return self.root / RUN_STATE_FILE

    @property
    def config(self) -> Path:
        """``config.yaml``: the command's full configuration."""
        return self.root / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        """The discovery model's checkpoint."""
        return self.root / self.CHECKPOINT

    @property
    def maps(self) -> Path:
        """The folder of the raw anomaly maps (``index.csv`` and one ``.npy`` per image)."""
        return self.root / self.MAPS

    @property
    def maps_index(self) -> Path:
        """The maps' index."""
        return self.maps / "index.csv"

    @property
    def views(self) -> Path:
        """The frozen view cache while the model trains (removed when the run is done)."""
        return self.root / self.VIEWS

    @property
    def detector(self) -> Path:
        """A detector trained by the run, and anomalib's engine outputs."""
        return self.root / self.DETECTOR

    @property
    def assignments(self) -> Path:
        """``assignments.csv``: one row per image."""
        return self.root / "assignments.csv"

    @property
    def regions(self) -> Path:
        """``regions.csv``: one row per region."""
        return self.root / "regions.csv"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: NMI / ARI / F1 when the true types are known."""
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        """``summary.json``: counts, timings and settings."""
        return self.root / "summary.json"

    @property
    def region_features(self) -> Path:
        """The regions' features, for the embedding of a later report."""
        return self.root / REGION_FEATURES_FILE

    @property
    def report(self) -> Path:
        """The HTML report's folder."""
        return self.root / "report"


def check_output_root(root: str | Path, option: str = "--output") -> None:
    """Check, before anything is written, that results can be written under ``root``.

    Nothing is created: the first existing folder on the way to ``root`` must be a folder, and one
    this process may write in.

    Args:
        root: the results root.
        option: the command-line option that gave it, for the messages.

    Raises:
        NotADirectoryError: when ``root`` or one of its parents is a file.
        PermissionError: when the folder that would hold it is not writable.
    """
    root = Path(root).absolute()
    existing = next(path for path in (root, *root.parents) if path.exists())
    if not existing.is_dir():
        msg = (
            f"{option} {root}: {existing} is a file, not a folder; "
            "give a folder path for the results (or move that file away)"
        )
        raise NotADirectoryError(msg)
    if not os.access(existing, os.W_OK | os.X_OK):
        msg = (
            f"{option} {root}: cannot write in {existing} (permission denied); "
            f"give a folder you can write to, or make it writable (chmod u+w {existing})"
        )
        raise PermissionError(msg)


def run_base(root: str | Path, dataset: str, category: str = "") -> Path:
    """The folder holding every version of one dataset/category.

    Args:
        root: results root (anomalib uses ``results``).
        dataset: dataset name.
        category: category name (empty for single-category datasets: ``all``).

    Returns:
        ``<root>/NCD/<dataset>/<category or "all">``.
    """
    return Path(root) / "NCD" / dataset / (category or "all")


def new_run_dir(root: str | Path, dataset: str, category: str = "") -> Path:
    """Create the next versioned run folder.

    Args:
        root: results root (anomalib uses ``results``).
        dataset: dataset name.
        category: category name (empty for single-category datasets).

    Returns:
        The new, empty run folder ``<root>/NCD/<dataset>/<category>/vN``.
    """
    return next_version_dir(run_base(root, dataset, category))


def next_version_dir(base: str | Path) -> Path:
    """Create and return the next ``vN`` folder under ``base``.

    Args:
        base: the folder of the versions (created when missing).

    Returns:
        The new, empty ``base/vN``.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    while True:
        versions = [int(match.group(1)) for path in base.iterdir() if (match := _VERSION.match(path.name))]
        run = base / f"v{max(versions, default=-1) + 1}"
        try:
            run.mkdir()
        except FileExistsError:  # another run took this version meanwhile
            continue
        return run


def remove_run_dir(run: str | Path) -> None:
    """Delete a failed run folder, and the ``NCD/<dataset>/<category>`` folders it leaves empty.

    Args:
        run: the run folder ``<root>/NCD/<dataset>/<category>/vN``.
    """
    run = Path(run)
    shutil.rmtree(run, ignore_errors=True)
    for parent in list(run.parents)[:3]:  # <category>, <dataset>, NCD: never the results root
        try:
            parent.rmdir()
        except OSError:  # not empty (other versions, other datasets) or already gone
            break


def mark_latest(run: str | Path) -> Path:
    """Point ``latest`` (next to the run's version folders) at a completed run, atomically.

    Args:
        run: the run folder ``.../vN``.

    Returns:
        The ``latest`` link.
    """
    run = Path(run)
    latest = run.parent / "latest"
    tmp_link = run.parent / f".latest.{run.name}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(run.name, target_is_directory=True)
    tmp_link.replace(latest)  # atomic: readers see the old or the new run, never none
    return latest


def write_run_state(run: str | Path, **fields: Any) -> dict[str, Any]:
    """Update the run's ``run.json`` with ``fields`` (atomic).

    Args:
        run: the run folder.
        **fields: values to set, e.g. ``stage="training"``, ``complete=True``.

    Returns:
        The whole state after the update.
    """
    state = read_run_state(run) | fields
    atomic_write_text(Path(run) / RUN_STATE_FILE, json.dumps(state, indent=2, default=str))
    return state


def read_run_state(run: str | Path) -> dict[str, Any]:
    """The run's ``run.json`` (empty when it has none yet).

    Args:
        run: the run folder.

    Returns:
        The state.
    """
    path = Path(run) / RUN_STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def resolve_run(path: str | Path) -> Path:
    """A run folder from its path or a ``latest`` link, checked to be one.

    Args:
        path: ``.../vN`` or ``.../latest``.

    Returns:
        The resolved run folder.

    Raises:
        FileNotFoundError: when it is not a run folder of this package.
    """
    run = Path(path)
    if not run.is_dir():
        msg = f"run folder not found: {run}"
        raise FileNotFoundError(msg)
    run = run.resolve()
    if not (run / RUN_STATE_FILE).is_file():
        msg = f"{run} is not an anomalib-ncd run folder (it has no {RUN_STATE_FILE})"
        raise FileNotFoundError(msg)
    return run


def run_id(run: str | Path) -> str:
    """How reports and reviews name a run: ``<dataset>/<category>/vN`` (it survives moving the results).

    Args:
        run: the run folder.

    Returns:
        Its last three path parts.
    """
    return "/".join(Path(run).resolve().parts[-3:])
