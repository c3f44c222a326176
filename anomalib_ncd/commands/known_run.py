"""A reviewed run as a labeled set: its named classes become known classes of a new discovery.

The run's regions are cut again exactly as the run cut them (its maps, its model's fitted MEBin
range) and each takes its reviewed class from ``regions.csv`` (matched by image and box).
Regions reviewed as ``normal`` or ``unknown`` and whole-image regions are not examples of a kind
of defect, so they stay out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from anomalib_ncd.discovery.novelty import UNKNOWN
from anomalib_ncd.pipeline.runs import completed_run, load_run_model
from anomalib_ncd.regions.crops import Region
from anomalib_ncd.results import RunFolder

NOT_A_KIND = ("normal", UNKNOWN)


def known_regions_of_run(run_dir: Path) -> tuple[list[Region], list[int], list[str]]:
    """The defect regions of a run with their (reviewed) class indices, as ``--known`` takes them.

    Args:
        run_dir: a completed run with ``regions.csv``, ``maps/`` and a model checkpoint.

    Returns:
        ``(regions, classes, class_names)``; class indices follow the sorted names.

    Raises:
        ValueError: when the run is not complete, lacks its regions or maps, or names no defect class.
    """
    from anomalib_ncd.maps.folder import load_map_folder
    from anomalib_ncd.regions.extract import read_set_image

    run_dir, _ = completed_run(run_dir)
    needed = [RunFolder(run_dir).regions, RunFolder(run_dir).maps_index, RunFolder(run_dir).checkpoint]
    missing = [str(path.relative_to(run_dir)) for path in needed if not path.is_file()]
    if missing:
        msg = f"--known {run_dir}: the run lacks {', '.join(missing)} (a discover or review run has them)"
        raise ValueError(msg)
    table = pd.read_csv(RunFolder(run_dir).regions)
    labels = {
        (str(row.image_path), int(row.x0), int(row.y0), int(row.x1), int(row.y1)): str(row.class_name)
        for row in table.itertuples(index=False)
        if not bool(row.whole_image) and str(row.class_name) not in NOT_A_KIND
    }
    if not labels:
        msg = f"--known {run_dir}: no region has a defect class (all are normal, unknown or whole-image)"
        raise ValueError(msg)
    wanted = sorted({path for path, *_ in labels})
    maps = load_map_folder(run_dir / "maps")
    rows = [index for index, path in enumerate(maps.image_paths) if str(path) in wanted]
    model = load_run_model(run_dir)
    pixels = [read_set_image(maps, index) for index in rows]
    found = model.classify_images(pixels, [maps.maps[index] for index in rows], progress=True)
    regions, names = [], []
    for region in found.regions:
        key = (str(maps.image_paths[rows[region.image_index]]), *(int(v) for v in region.box))
        if key in labels:
            regions.append(region)
            names.append(labels[key])
    if len(regions) < len(labels):
        msg = (
            f"--known {run_dir}: {len(labels) - len(regions)} of its {len(labels)} labeled regions were not found "
            "again in its maps (were the maps or the model changed?)"
        )
        raise ValueError(msg)
    class_names = sorted(set(names))
    index = {name: number for number, name in enumerate(class_names)}
    return regions, [index[name] for name in names], class_names
