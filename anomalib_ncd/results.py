"""Results folders in anomalib's layout: ``<root>/NCD/<dataset>/<category>/vN`` plus a ``latest`` link."""

from __future__ import annotations

import re
from pathlib import Path

_VERSION = re.compile(r"^v(\d+)$")


def new_run_dir(root: str | Path, dataset: str, category: str = "") -> Path:
    """Create the next versioned run folder and point ``latest`` at it.

    Args:
        root: results root (anomalib uses ``results``).
        dataset: dataset name.
        category: category name (empty for single-category datasets).

    Returns:
        The new, empty run folder ``<root>/NCD/<dataset>/<category>/vN``.
    """
    base = Path(root) / "NCD" / dataset / (category or "all")
    base.mkdir(parents=True, exist_ok=True)
    versions = [int(match.group(1)) for path in base.iterdir() if (match := _VERSION.match(path.name))]
    run = base / f"v{max(versions, default=-1) + 1}"
    run.mkdir()
    latest = base / "latest"
    tmp_link = base / f".latest.{run.name}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(run.name, target_is_directory=True)
    tmp_link.replace(latest)  # atomic: readers see the old or the new run, never none
    return run
