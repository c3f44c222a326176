"""``anomalib-ncd export``: a run's images sorted into one folder per class, for downstream training.

``DIR/<class name>/<image>`` for every image of the run (reviewed names when the run is a review;
``unknown`` holds the images that fit no class), and ``DIR/index.csv`` with the source path, the
class and the exported file of each image. Files are copied, or linked with ``--link true``
(symbolic links: nothing is duplicated, but moving the images breaks them). Names that two images
share (the same file name in two type folders) get a numbered suffix, never overwrite each other.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.pipeline.runs import completed_run
from anomalib_ncd.results import RunFolder

INDEX_FILE = "index.csv"
_UNSAFE = re.compile(r"[^\w.\- ]+")


def folder_name(class_name: str) -> str:
    """A file-system-safe folder name for a class (``stain / oil`` -> ``stain _ oil``)."""
    name = _UNSAFE.sub("_", str(class_name)).strip(" .")
    return name or "_"


def export(run: str, to: str, link: bool = False) -> Path:
    """Write a run's images into one folder per class.

    Args:
        run: a completed ``discover``, ``add`` or ``review`` run folder, or its ``latest`` link.
        to: the export folder; created if needed, and must not hold an earlier export's classes
            (an export never mixes with another).
        link: symbolic links instead of copies.

    Returns:
        The export folder.

    Raises:
        ValueError: when ``run`` is not a completed run, or ``to`` already holds an export.
        FileNotFoundError: when an image of the run is missing.
    """
    run_dir, _ = completed_run(run)
    target = Path(to)
    if (target / INDEX_FILE).exists():
        msg = f"{target} already holds an export ({INDEX_FILE}); choose an empty folder"
        raise ValueError(msg)
    assignments = pd.read_csv(RunFolder(run_dir).assignments)
    sources = [Path(path) for path in assignments["image_path"]]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        msg = f"{len(missing)} images of the run are missing, e.g. {missing[0]}"
        raise FileNotFoundError(msg)
    target.mkdir(parents=True, exist_ok=True)
    used: set[Path] = set()
    rows = []
    for source, class_name in zip(sources, assignments["class_name"].astype(str), strict=True):
        destination = _free_name(target / folder_name(class_name) / source.name, used)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if link:
            destination.symlink_to(source.resolve())
        else:
            shutil.copy2(source, destination)
        rows.append({"image_path": str(source), "class_name": class_name, "file": str(destination.relative_to(target))})
    atomic_write_text(target / INDEX_FILE, pd.DataFrame(rows).to_csv(index=False))
    counts = pd.Series([row["class_name"] for row in rows]).value_counts()
    print(f"{len(rows)} images in {len(counts)} class folders under {target}")
    return target


def _free_name(path: Path, used: set[Path]) -> Path:
    """``path``, or ``stem_2.ext``, ``stem_3.ext``... when an earlier image took it."""
    candidate, number = path, 1
    while candidate in used or candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
    used.add(candidate)
    return candidate
