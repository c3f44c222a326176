"""``anomalib-ncd review``: apply the edits made in a run's report (``review.json``) as a new run version.

The run itself is never changed. The reviewed run goes to the next version folder beside it,
``<dataset>/<category>/vN+1``, with

- ``assignments.csv`` and ``regions.csv``: ``class_name`` is the reviewed class, ``model_class_name``
  the model's, ``review`` what changed the row (``renamed`` or ``moved``);
- ``weights/lightning/model.ckpt``: the run's model with the reviewed class names, so ``predict``
  and ``add`` on the reviewed run name new images' classes as the engineer did (merged classes share
  a name) and only new kinds get new names;
- ``maps/`` (hard links where the file system allows), ``summary.json`` (images per reviewed class),
  ``review.json`` (the edits applied), ``report/index.html`` and ``run.json`` (``command: review``).

A reviewed run is also a labeled set: ``discover --known RUN`` learns its named classes as known ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from anomalib_ncd.commands.config import CONFIG_FILE, config_yaml
from anomalib_ncd.discovery.novelty import UNKNOWN
from anomalib_ncd.io import atomic_write_text
from anomalib_ncd.pipeline.runs import completed_run, load_run_model
from anomalib_ncd.results import (
    REGION_FEATURES_FILE,
    RunFolder,
    mark_latest,
    next_version_dir,
    read_run_state,
    remove_run_dir,
    run_id,
    write_run_state,
)
from anomalib_ncd.review import REVIEW_FILE, ReviewEdits, apply_review, reviewed_class_names

if TYPE_CHECKING:
    from anomalib_ncd.discovery.lightning_model import AnomalyNCD

logger = logging.getLogger("anomalib_ncd")

RUN_FILES_KEPT = (REGION_FEATURES_FILE,)


def review(run: str, edits: str, report: bool = True) -> Path:
    """Apply a review (``review.json`` from the run's report) to a run, as a new run version.

    Args:
        run: a completed ``discover``, ``add`` or ``review`` run folder, or its ``latest`` link.
        edits: the ``review.json`` the report downloaded.
        report: write the reviewed run's HTML report.

    Returns:
        The new run folder.

    Raises:
        ReviewError: when the edits are malformed or name classes or images the run lacks.
        ValueError: when ``run`` is not a completed run.
    """
    arguments = dict(locals())
    run_dir, state = completed_run(run)
    review_edits = ReviewEdits.read(edits)
    if review_edits.run and review_edits.run != run_id(run_dir):
        logger.warning("the edits were made on run %s; applying them to %s", review_edits.run, run_id(run_dir))
    assignments = pd.read_csv(RunFolder(run_dir).assignments)
    regions = pd.read_csv(RunFolder(run_dir).regions)
    reviewed_images, reviewed_regions = apply_review(assignments, regions, review_edits)
    model = load_run_model(run_dir) if RunFolder(run_dir).checkpoint.is_file() else None
    if model is not None:
        model.set_reviewed_names(reviewed_class_names(model.class_names, review_edits))

    new_run = next_version_dir(run_dir.parent)
    carried = {key: state.get(key) for key in ("detector_checkpoint", "detector_input", "detector_model")}
    write_run_state(
        new_run,
        command="review",
        stage="started",
        complete=False,
        dataset=state.get("dataset", ""),
        category=state.get("category", ""),
        parent=str(run_dir),
        **carried,
    )
    try:
        _write_reviewed_run(new_run, run_dir, model, review_edits, reviewed_images, reviewed_regions, arguments)
    except Exception:
        remove_run_dir(new_run)  # a failed review leaves no half-made version
        raise
    write_run_state(new_run, stage="done", complete=True)
    mark_latest(new_run)
    print(
        f"review of {run_id(run_dir)} applied ({review_edits.n_edits} edits): "
        f"{len(reviewed_classes(reviewed_images, reviewed_regions))} classes; results in {new_run}"
    )
    return new_run


def _write_reviewed_run(
    new_run: Path,
    run_dir: Path,
    model: AnomalyNCD | None,
    edits: ReviewEdits,
    images: pd.DataFrame,
    regions: pd.DataFrame,
    arguments: dict,
) -> None:
    from anomalib_ncd.pipeline.checkpoint import save_model_checkpoint

    atomic_write_text(new_run / CONFIG_FILE, config_yaml(arguments))
    atomic_write_text(new_run / REVIEW_FILE, json.dumps(edits.as_dict(), indent=2, ensure_ascii=False))
    atomic_write_text(RunFolder(new_run).assignments, images.to_csv(index=False))
    atomic_write_text(RunFolder(new_run).regions, regions.to_csv(index=False))
    if model is not None:
        save_model_checkpoint(model, RunFolder(new_run).checkpoint)
    if RunFolder(run_dir).maps.is_dir():
        _link_tree(RunFolder(run_dir).maps, RunFolder(new_run).maps)
    for name in RUN_FILES_KEPT:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, new_run / name)
    parent_summary = _read_json(RunFolder(run_dir).summary)
    counts = images["class_name"].astype(str).value_counts()
    summary = {
        "parent": str(run_dir),
        "images": len(images),
        "regions": len(regions),
        "classes": {str(name): int(count) for name, count in counts.sort_index().items()},
        "review": {
            "renamed_classes": dict(edits.classes),
            "moved_images": len(edits.images),
            "moved_regions": len(edits.regions),
        },
        "parent_summary": parent_summary,
    }
    atomic_write_text(RunFolder(new_run).summary, json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    if arguments["report"]:
        write_reviewed_report(new_run, images, regions, model, summary)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder as hard links (no extra space), falling back to copies across file systems."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def reviewed_classes(images: pd.DataFrame, regions: pd.DataFrame) -> list[str]:
    """The reviewed class names of a run, in first-seen order (``unknown`` is a flag, not a class)."""
    names: list[str] = []
    for name in [*images["class_name"].astype(str), *regions["class_name"].astype(str)]:
        if name != UNKNOWN and name not in names:
            names.append(name)
    return names


def _shown_classes(table: pd.DataFrame, model_names: list[str], index: dict[str, int]) -> list[int]:
    """Each row's reviewed class index; a row still flagged unknown takes its nearest class, named as reviewed."""
    shown = []
    for name, model_class in zip(table["class_name"].astype(str), table["pred_class"], strict=True):
        nearest = model_names[int(model_class)] if 0 <= int(model_class) < len(model_names) else ""
        shown.append(index.get(nearest if name == UNKNOWN else name, 0))
    return shown


def write_reviewed_report(
    run: Path, images: pd.DataFrame, regions: pd.DataFrame, model: AnomalyNCD | None, summary: dict
) -> Path:
    """The reviewed run's HTML report: galleries per reviewed class, the review panel ready for more edits.

    Args:
        run: the reviewed run folder (its ``maps/`` are read).
        images: reviewed ``assignments.csv``.
        regions: reviewed ``regions.csv``.
        model: the run's model (its MEBin range colours the maps), or ``None``.
        summary: shown in the settings appendix.

    Returns:
        The path of ``index.html``.
    """
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.pipeline.report_data import overlay_range
    from anomalib_ncd.report import ReportData, write_report

    names = reviewed_classes(images, regions)
    index = {name: number for number, name in enumerate(names)}
    table = images.reset_index(drop=True).copy()
    # an image still flagged unknown is shown in the gallery of its nearest class (reviewed name), as in discover
    model_names = [] if model is None else model.class_names
    table["pred_class"] = _shown_classes(table, model_names, index)
    if "defect_type" not in table:
        table["defect_type"] = None
    maps = load_map_folder(RunFolder(run).maps) if RunFolder(run).maps.is_dir() else None
    by_path = {} if maps is None else {str(path): m for path, m in zip(maps.image_paths, maps.maps, strict=True)}
    image_maps = [by_path.get(str(path), np.zeros((8, 8), np.float32)) for path in table["image_path"]]
    region_table = regions.copy()
    row_of = {str(path): row for row, path in enumerate(table["image_path"])}
    region_table["image_index"] = [row_of.get(str(path), 0) for path in region_table["image_path"]]
    region_table["pred_class"] = _shown_classes(region_table, model_names, index)
    map_range = overlay_range(None if model is None else model.mebin, image_maps)
    features = None
    if RunFolder(run).region_features.is_file():
        stored = np.load(RunFolder(run).region_features, allow_pickle=False)
        features = stored if len(stored) == len(region_table) else None
    metrics = None
    if "defect_type" in table and table["defect_type"].notna().all():
        from anomalib_ncd.evaluation.metrics import discovery_metrics

        metrics = discovery_metrics(table, region_table)  # the reviewed classes against the true types
        atomic_write_text(RunFolder(run).metrics, json.dumps(metrics, indent=2))
    state = read_run_state(run)
    data = ReportData(
        title=f"{state.get('dataset', '')} / {state.get('category', '') or 'all'} - {run.name} (reviewed)",
        images=table,
        regions=region_table,
        maps=image_maps,
        map_range=map_range,
        class_names=names,
        features=features,
        metrics=metrics,
        settings=summary,
        run_id=run_id(run),
        detector=str(state.get("detector_model") or ""),
    )
    return write_report(data, RunFolder(run).report)
