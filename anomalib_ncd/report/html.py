"""Render a :class:`ReportData` as one self-contained HTML page (plus its figures as PNG files).

The page is a Jinja2 template (``templates/report.html.j2``, autoescaped; its CSS is
``templates/report.css.j2``); this module gathers what it shows. Every image in ``index.html`` is an
inline ``data:`` URI, and the CSS and the review panel's script (``assets/review.js``: rename,
merge, move, filter, sort; edits kept in the browser's local storage and downloaded as
``review.json``) are inline, so the page can be mailed, archived or opened offline on its own: no
server, no network. The figures are also written next to it as PNG files for slides and papers.
All files are written atomically, figures first, so a complete ``index.html`` always comes with the
figures of the same run.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from anomalib_ncd.io import atomic_write_path, atomic_write_text
from anomalib_ncd.report.data import ReportData, is_known
from anomalib_ncd.report.plots import (
    EmbeddingLayout,
    class_count_plot,
    class_sizes_plot,
    embedding_layout,
    embedding_plot,
    mebin_curves_plot,
)
from anomalib_ncd.report.thumbnails import Thumbnails, class_colour, make_thumbnails

logger = logging.getLogger(__name__)

REPORT_FILE: str = "index.html"
"""Name of the page inside the report folder."""

FIGURE_FILES: dict[str, str] = {
    "class_sizes": "class_sizes.png",
    "embedding": "embedding.png",
    "mebin_curves": "mebin_curves.png",
    "class_count": "class_count.png",
}
"""File name of each figure written next to the page."""

METRIC_NAMES: tuple[tuple[str, str], ...] = (("nmi", "NMI"), ("ari", "ARI"), ("f1", "F1"), ("n_samples", "n"))
"""Metrics of a ``ClusteringReport.as_dict()`` shown in the table, with their column headings."""

REVIEW_SCRIPT = "assets/review.js"
"""The review panel's script, inlined into the page."""

REPORT_TEMPLATE = "report.html.j2"
"""The page's template, in ``anomalib_ncd/report/templates``."""


def write_report(data: ReportData, folder: str | Path) -> Path:
    """Write ``folder/index.html`` and the figures ``class_sizes.png``, ``embedding.png``, ``mebin_curves.png``.

    Figures that cannot be drawn (no features, too few regions, no MEBin curve) are left out of the
    page with a note, and a stale file of that name from an earlier report is removed. Images are
    read one at a time, so memory does not grow with the data set.

    Args:
        data: what to show.
        folder: the report folder; created if needed.

    Returns:
        The path of ``index.html``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = embedding_layout(data.features)  # once, for the PNG figure and the page's clickable plot
    figures = render_figures(data, layout)
    for name, png in figures.items():
        _write_figure(folder / FIGURE_FILES[name], png)
    page = folder / REPORT_FILE
    atomic_write_text(page, render_html(data, figures, layout))
    return page


def render_figures(data: ReportData, layout: EmbeddingLayout | None = None) -> dict[str, bytes | None]:
    """Draw the report's figures.

    Args:
        data: the report data.
        layout: the embedding's layout (default: computed from ``data.features``).

    Returns:
        ``{figure name: PNG bytes or None}`` keyed like :data:`FIGURE_FILES`.
    """
    return {
        "class_sizes": class_sizes_plot(data.images_per_class(), data.regions_per_class(), data.class_names),
        "embedding": embedding_plot(
            layout if layout is not None else embedding_layout(data.features),
            data.regions["pred_class"].to_numpy(),
            data.class_names,
        ),
        "mebin_curves": mebin_curves_plot(data.mebin_curves),
        "class_count": class_count_plot(data.class_count),
    }


def render_html(data: ReportData, figures: Mapping[str, bytes | None], layout: EmbeddingLayout | None = None) -> str:
    """The complete page as a string, rendered from ``templates/report.html.j2``.

    Args:
        data: the report data.
        figures: figures from :func:`render_figures`.
        layout: the embedding's layout: drawn as a clickable plot (a point shows its image).

    Returns:
        The HTML document.
    """
    environment = _environment()
    by_image = _regions_by_image(data.regions)
    per_class = data.images_per_class()
    classes = [
        {"index": index, "name": str(name), "rgb": class_colour(index), "count": int(per_class[index])}
        for index, name in enumerate(data.class_names)
    ]
    context = {
        "title": data.title,
        "css": environment.get_template("report.css.j2").render(thumb=data.thumbnail_size),
        "subtitle": _subtitle(data),
        "stats": _stats(data, per_class),
        "classes": classes,
        "nav": _nav(data),
        "metrics": _metrics(data),
        "figures": {name: _uri(figures.get(name)) for name in FIGURE_FILES},
        "galleries": [_gallery(data, item, by_image) for item in classes],
        "unknown": _unknown(data, by_image),
        "embedding": _embedding(data, layout),
        "settings": json.dumps(data.settings, indent=2, ensure_ascii=False, default=str),
        "review_data": _review_data(data),
        "script": _review_script(),
    }
    return environment.get_template(REPORT_TEMPLATE).render(**context) + "\n"


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("anomalib_ncd.report", "templates"),
        autoescape=True,  # every name, path and setting is text, never markup
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )


def _uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _review_data(data: ReportData) -> str:
    content = {"run": data.run_id or data.title, "classes": [str(name) for name in dict.fromkeys(data.class_names)]}
    return json.dumps(content, ensure_ascii=False).replace("</", "<\\/")  # no early end of the script element


def _review_script() -> str:
    from importlib.resources import files

    return files("anomalib_ncd.report").joinpath(REVIEW_SCRIPT).read_text(encoding="utf-8")


def _write_figure(path: Path, png: bytes | None) -> None:
    if png is None:
        path.unlink(missing_ok=True)  # a figure left from an earlier report would not match this one
        return
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(png)


def _number(value: Any, digits: int = 3) -> str:
    """A number for display; missing or NaN values read ``n/a``."""
    if value is None:
        return "n/a"
    number = float(value)
    if math.isnan(number):
        return "n/a"
    return f"{number:.{digits}f}"


def _subtitle(data: ReportData) -> list[str]:
    facts = [f"run {data.run_id}" if data.run_id else "", f"detector {data.detector}" if data.detector else ""]
    return [fact for fact in [*facts, f"written {data.created}"] if fact]


def _stats(data: ReportData, per_class: Sequence[int]) -> list[tuple[str, int]]:
    n_empty = int(sum(1 for count in per_class if count == 0))
    stats = [
        ("images", len(data.images)),
        ("regions", len(data.regions)),
        ("classes with images" if n_empty else "classes", len(per_class) - n_empty),
        ("whole-image regions", int(data.regions["whole_image"].astype(bool).sum())),
    ]
    if n_empty:
        stats.append(("empty classes", n_empty))
    if "unknown" in data.images.columns:
        stats.append(("unknown images", int(data.images["unknown"].astype(bool).sum())))
    return stats


def _nav(data: ReportData) -> list[tuple[str, str]]:
    links = [("metrics", "Metrics"), ("sizes", "Class sizes"), ("embedding", "Embedding"), ("mebin", "MEBin")]
    if "unknown" in data.images.columns:
        links.insert(2, ("unknown", "Unknown"))
    return [*links, ("settings", "Settings")]


def _metrics(data: ReportData) -> dict[str, Any] | None:
    """The metrics table and the image-level confusion, or ``None`` without ground truth."""
    if not data.metrics:
        return None
    rows = []
    for level, stored in data.metrics.items():
        values = stored if isinstance(stored, Mapping) else {}
        cells = [_number(values.get(key), 0 if key == "n_samples" else 3) for key, _ in METRIC_NAMES]
        rows.append({"level": str(level), "cells": cells})
    return {"headings": [label for _, label in METRIC_NAMES], "rows": rows, "confusion": _confusion(data)}


def _confusion_frame(data: ReportData) -> pd.DataFrame | None:
    """The image-level confusion: as given, or rebuilt from the image metrics' ``confusion`` entry."""
    if data.confusion is not None:
        return data.confusion
    stored = (data.metrics or {}).get("image", {})
    table = stored.get("confusion") if isinstance(stored, Mapping) else None
    if not isinstance(table, Mapping) or not {"index", "columns", "data"} <= table.keys():
        return None
    return pd.DataFrame(table["data"], index=table["index"], columns=table["columns"])


def _confusion(data: ReportData) -> dict[str, Any] | None:
    frame = _confusion_frame(data)
    if frame is None or frame.empty:
        return None
    rows = [
        {
            "label": str(label),
            # matched clusters are named after their class, so a match is where the labels agree
            "cells": [
                {"value": _number(count, 0), "diagonal": str(column) == str(label)} for column, count in counts.items()
            ],
        }
        for label, counts in frame.iterrows()
    ]
    return {"columns": [_cluster_heading(data, column) for column in frame.columns], "rows": rows}


def _cluster_heading(data: ReportData, column: object) -> str:
    """A confusion column by the gallery's class name, with its matched true type: ``novel_2 = crack``."""
    stored = (data.metrics or {}).get("image", {})
    mapping = stored.get("mapping", {}) if isinstance(stored, Mapping) else {}
    cluster_of_type = {str(kind): str(cluster) for cluster, kind in mapping.items() if kind is not None}
    text = str(column)
    if text in cluster_of_type:
        return f"{cluster_of_type[text]} = {text}"
    if text.startswith("cluster ") and text.endswith(" (unmatched)"):
        return f"{text[len('cluster ') : -len(' (unmatched)')]} (unmatched)"
    return text


def _embedding(data: ReportData, layout: EmbeddingLayout | None) -> dict[str, Any] | None:
    """The region embedding's points for the inline SVG (a point names its image; a click shows it)."""
    if layout is None:
        return None
    width, height, margin = 720, 480, 12.0
    low, high = layout.points.min(axis=0), layout.points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = margin + (layout.points - low) / span * np.array([width - 2 * margin, height - 2 * margin])
    points = []
    for row, (x, y) in zip(layout.rows, scaled, strict=True):
        region = data.regions.iloc[int(row)]
        path = str(data.images.at[int(region["image_index"]), "image_path"])
        class_index = int(region["pred_class"])
        points.append(
            {
                "x": f"{x:.1f}",
                "y": f"{height - y:.1f}",
                "rgb": class_colour(class_index),
                "path": path,
                "region": str(region["region"]),
                "title": f"{data.class_names[class_index]}: {path} (region {region['region']})",
            }
        )
    shown = str(layout.n_regions)
    if len(layout.rows) < layout.n_regions:
        shown = f"{len(layout.rows)} of {shown}"
    return {"method": layout.method, "shown": shown, "width": width, "height": height, "points": points}


def _regions_by_image(regions: pd.DataFrame) -> dict[int, np.ndarray]:
    """Row positions of each image's regions, computed once for all galleries."""
    if regions.empty:
        return {}
    groups = regions.groupby("image_index", sort=False).indices
    return {int(image): rows for image, rows in groups.items()}


def _cards(data: ReportData, rows: Iterable[int], by_image: Mapping[int, np.ndarray]) -> list[dict[str, Any]]:
    return [_card(data, int(row), by_image.get(int(row), np.empty(0, dtype=np.int64))) for row in rows]


def _gallery(data: ReportData, item: dict[str, Any], by_image: Mapping[int, np.ndarray]) -> dict[str, Any]:
    members = data.images.loc[data.images["pred_class"].to_numpy() == item["index"]]
    if members.empty:
        return {**item, "cards": [], "note": ""}
    ranked = members.sort_values("confidence", ascending=False, kind="stable", na_position="last")
    shown = ranked.index[: data.max_per_class]
    note = f"showing {len(shown)} of {len(members)} images, highest confidence first"
    if data.object_prior is not None:
        note += f"; yellow line: the object found by the {getattr(data.object_prior, 'name', '')} object prior"
    if item["name"] == "normal":
        note += (
            ". Normal holds two kinds of image, each card says which: nothing found by the detector "
            "(no region), and regions the model judged over-detections"
        )
    return {**item, "cards": _cards(data, shown, by_image), "note": note}


def _unknown(data: ReportData, by_image: Mapping[int, np.ndarray]) -> dict[str, Any] | None:
    """Images that fit no class (when the table says), least typical first; they also stay in their nearest class."""
    if "unknown" not in data.images.columns:
        return None
    members = data.images.loc[data.images["unknown"].astype(bool).to_numpy()]
    if members.empty:
        return {"cards": [], "note": ""}
    ranked = members.sort_values("unknown_score", ascending=False, kind="stable", na_position="last")
    shown = ranked.index[: data.max_per_class]
    note = (
        f"showing {len(shown)} of {len(members)} images, least typical first; each is also shown in the gallery "
        "of its nearest class"
    )
    return {"cards": _cards(data, shown, by_image), "note": note}


def _thumbnails(data: ReportData, row: int, region_rows: np.ndarray) -> Thumbnails | str:
    """The image's thumbnails, or the reason they could not be made (an unreadable file)."""
    try:
        return make_thumbnails(
            data.images.at[row, "image_path"],
            data.maps[row],
            data.regions.iloc[region_rows],
            data.map_range,
            data.thumbnail_size,
            data.object_prior,
        )
    except (OSError, ValueError, cv2.error) as error:
        logger.warning("report: no thumbnails for %s: %s", data.images.at[row, "image_path"], error)
        return str(error)


def _card(data: ReportData, row: int, region_rows: np.ndarray) -> dict[str, Any]:
    image = data.images.loc[row]
    facts = [
        ("confidence", _number(image["confidence"])),
        ("anomaly score", _number(image["anomaly_score"]) + _rank_note(data, row)),
        ("regions", _number(image["n_regions"], 0)),
    ]
    if "unknown_score" in image.index:
        flag = " (unknown)" if bool(image.get("unknown", False)) else ""
        score = _number(image["unknown_score"])
        shown = data.unknown_threshold is not None and score != "n/a"
        threshold = f" / threshold {_number(data.unknown_threshold)}" if shown else ""
        facts.append(("unknown score", score + threshold + flag))
    truth = image.get("defect_type")
    if is_known(truth):
        facts.append(("ground truth", str(truth)))
    class_name = str(data.class_names[int(image["pred_class"])])
    thumbnails = _thumbnails(data, row, region_rows)
    thumbs: list[dict[str, str]] = []
    if not isinstance(thumbnails, str):
        crop_caption = "whole image" if thumbnails.crop_is_whole_image else "largest region"
        thumbs = [
            {"uri": thumbnails.boxes, "caption": "regions"},
            {"uri": thumbnails.overlay, "caption": "anomaly map"},
            {"uri": thumbnails.crop, "caption": crop_caption},
        ]
    return {
        "path": str(image["image_path"]),
        "file_uri": _file_uri(str(image["image_path"])),
        "name": data.display_name(row),  # the type folders too: datasets reuse file names across types
        "class_name": class_name,
        "confidence_key": _number(image["confidence"], 6),
        "anomaly_key": _number(image["anomaly_score"], 6),
        "unknown_key": _number(image.get("unknown_score"), 6),
        "thumbs": thumbs,
        "error": thumbnails if isinstance(thumbnails, str) else None,
        "badge": _normal_badge(image) if class_name == "normal" else "",
        "facts": facts,
        "regions": _region_rows(data, region_rows),
    }


def _region_rows(data: ReportData, region_rows: np.ndarray) -> list[dict[str, Any]]:
    """An image's regions, each movable on its own, when it has more than one (else moving the image is enough)."""
    if len(region_rows) < 2:
        return []
    rows = []
    for region in data.regions.iloc[region_rows].itertuples(index=False):
        class_index = int(region.pred_class)
        rows.append(
            {
                "number": str(region.region),
                "class_name": str(data.class_names[class_index]),
                "rgb": class_colour(class_index),
                "size": f"{int(region.x1 - region.x0)} x {int(region.y1 - region.y0)} px",
                "confidence": _number(region.confidence),
            }
        )
    return rows


def _file_uri(path: str) -> str:
    """The image file as a ``file://`` URI (the lightbox's full resolution; empty for a relative path)."""
    candidate = Path(path)
    return candidate.as_uri() if candidate.is_absolute() else ""


def _rank_note(data: ReportData, row: int) -> str:
    """Where the image's detector score ranks in the run (raw scores have the detector's own units)."""
    share = data.anomaly_score_share(row)
    return "" if share is None else f" (top {100.0 * share:.0f}%)"


def _normal_badge(image: pd.Series) -> str:
    """Why an image of the normal class is there: the detector found nothing, or the model said so."""
    n_regions = int(image["n_regions"]) if _number(image["n_regions"], 0) != "n/a" else 0
    path = str(image.get("path_taken", ""))
    if path in ("none", "normal") or n_regions == 0:
        return "nothing found by the detector"
    if path == "soft":  # no MEBin region: the soft path looked at the map's strongest spot
        return "no region found by the detector; its strongest spot was judged normal"
    return "region judged an over-detection by the model"
