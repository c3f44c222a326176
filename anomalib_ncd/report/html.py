"""Render a :class:`ReportData` as one self-contained HTML page (plus its figures as PNG files).

Every image in ``index.html`` is an inline ``data:`` URI and the CSS and the review panel's script
(``assets/review.js``: rename, merge, move, filter, sort; edits kept in the browser's local storage
and downloaded as ``review.json``) are inline, so the page can be mailed, archived or opened offline
on its own: no server, no network. The figures are also written
next to it as PNG files for slides and papers. All files are written atomically, figures first, so
a complete ``index.html`` always comes with the figures of the same run.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

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

_DIAGONAL = ' class="diag"'

_CSS = """
:root { --thumb: %(thumb)dpx; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1440px; padding: 24px 28px 48px; background: #f4f6f8; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 10px; display: flex; align-items: center; gap: 8px; }
header p.sub { color: #616e7c; margin: 0 0 14px; }
section { background: #fff; border-radius: 8px; padding: 16px 20px; margin: 16px 0;
  box-shadow: 0 1px 3px rgba(15, 23, 42, 0.08); }
nav { margin: 10px 0 0; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; }
nav a, nav a:visited { color: #2457a6; text-decoration: none; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; margin: 0; padding: 0; list-style: none; }
.stats li { background: #fff; border-radius: 8px; padding: 10px 16px; box-shadow: 0 1px 3px rgba(15, 23, 42, 0.08); }
.stats b { display: block; font-size: 22px; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 12px; }
.chip { display: inline-flex; align-items: center; gap: 6px; background: #fff; border: 1px solid #d9e0e7;
  border-radius: 999px; padding: 2px 10px; font-size: 13px; color: inherit; text-decoration: none; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; flex: none; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde3ea; padding: 4px 10px; text-align: right; }
th { background: #f0f3f6; font-weight: 600; }
th.row, td.row { text-align: left; }
td.diag { background: #e3f1e3; font-weight: 600; }
.note { color: #616e7c; margin: 4px 0 10px; }
h2 .note { font-size: 13px; font-weight: 400; margin: 0; }
.grid { display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fill, minmax(calc(3 * var(--thumb) + 34px), 1fr)); }
.card { margin: 0; border: 1px solid #e1e6eb; border-radius: 6px; padding: 8px; background: #fbfcfd; min-width: 0; }
.thumbs { display: flex; gap: 6px; }
.thumb { width: var(--thumb); margin: 0; text-align: center; }
.frame { width: var(--thumb); height: var(--thumb); display: flex; align-items: center; justify-content: center;
  background: #e9edf1; border-radius: 4px; overflow: hidden; }
.frame img { display: block; max-width: 100%%; max-height: 100%%; }
.frame.missing { color: #9aa5b1; font-size: 12px; padding: 6px; }
.thumb figcaption { font-size: 11px; color: #7b8794; }
.meta { margin-top: 6px; font-size: 12.5px; }
.name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.meta dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 10px; margin: 2px 0 0; }
.meta dt { color: #616e7c; }
.meta dd { margin: 0; font-variant-numeric: tabular-nums; }
.error { color: #b42318; }
img.plot { display: block; max-width: 100%%; height: auto; }
details summary { cursor: pointer; font-weight: 600; }
pre { background: #f0f3f6; padding: 12px; border-radius: 6px; overflow-x: auto; font-size: 12.5px; }
.path { font-size: 11px; color: #7b8794; overflow-wrap: anywhere; }
.badge { display: inline-block; font-size: 11px; border-radius: 4px; padding: 0 6px; margin-top: 3px;
  background: #eef2f6; color: #3e4c59; }
.review-bar { position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; align-items: center; gap: 8px 14px;
  background: #fff; border-radius: 8px; padding: 8px 14px; box-shadow: 0 1px 3px rgba(15, 23, 42, 0.15); }
.review-bar button { font: inherit; padding: 3px 10px; cursor: pointer; }
.class-review { display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; margin: -4px 0 10px;
  font-size: 13px; }
.class-review .final-name, .moved-to { color: #2457a6; font-size: 12px; }
.card-review { margin-top: 6px; font-size: 12px; }
.card-review select { max-width: 100%%; font-size: 12px; }
.card.moved { border-color: #2457a6; background: #f2f6fc; }
.card.flash { outline: 3px solid #f5a524; }
.frame img { cursor: zoom-in; }
#lightbox { position: fixed; inset: 0; z-index: 10; background: rgba(15, 23, 42, 0.85); display: flex;
  align-items: center; justify-content: center; margin: 0; cursor: zoom-out; }
#lightbox[hidden] { display: none; }
#lightbox img { width: min(90vw, 90vh); height: auto; image-rendering: pixelated; background: #fff; }
#lightbox figcaption { color: #fff; position: absolute; bottom: 16px; }
svg.embedding { max-width: 100%%; height: auto; background: #fbfcfd; border: 1px solid #e1e6eb; }
svg.embedding circle { cursor: pointer; stroke: #fff; stroke-width: 0.5; }
svg.embedding circle.picked { stroke: #1f2933; stroke-width: 2.5; r: 7; }
.card .name { cursor: pointer; }
"""

REVIEW_SCRIPT = "assets/review.js"
"""The review panel's script, inlined into the page."""


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
    """The complete page as a string.

    Args:
        data: the report data.
        figures: figures from :func:`render_figures`.
        layout: the embedding's layout: drawn as a clickable plot (a point shows its image).

    Returns:
        The HTML document.
    """
    body = [
        _header(data),
        _review_bar(),
        _metrics_section(data),
        _figure_section("sizes", "Class sizes", figures.get("class_sizes"), "Bar chart of images per class"),
        _figure_section(
            "class-count",
            "Number of classes (estimated)",
            figures.get("class_count"),
            "Score of each candidate number of classes",
            missing="The number of classes was given, not estimated.",
        ),
        *_gallery_sections(data),
        _unknown_section(data),
        _embedding_section(data, layout, figures.get("embedding")),
        _figure_section(
            "mebin",
            "MEBin threshold sweeps",
            figures.get("mebin_curves"),
            "Component count against normalised threshold",
            missing="No MEBin curves were recorded for this run.",
        ),
        _settings_section(data),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(data.title)}</title>",
            f"<style>{_CSS % {'thumb': data.thumbnail_size}}</style>",
            "</head>",
            "<body>",
            *body,
            _review_data(data),
            f"<script>{_review_script()}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _review_bar() -> str:
    return (
        '<div class="review-bar" id="review"><b>Review</b>'
        '<span id="review-count">0 edits</span>'
        '<button type="button" id="review-download">Download review.json</button>'
        '<button type="button" id="review-reset">Reset</button>'
        '<label>filter <input id="review-filter" type="search" placeholder="file name"></label>'
        '<label>sort <select id="review-sort"><option value="confidence">confidence</option>'
        '<option value="anomalyScore">anomaly score</option><option value="unknownScore">unknown score</option>'
        '<option value="name">file name</option></select></label>'
        '<span class="note">rename or merge a class at its gallery, move an image with its menu; '
        "edits stay in this browser; apply them with <code>anomalib-ncd review --run RUN --edits review.json"
        "</code></span></div>"
        '<figure id="lightbox" hidden><figcaption></figcaption></figure>'
    )


def _review_data(data: ReportData) -> str:
    content = {"run": data.run_id or data.title, "classes": [str(name) for name in dict.fromkeys(data.class_names)]}
    text = json.dumps(content, ensure_ascii=False).replace("</", "<\\/")  # no early end of the script element
    return f'<script type="application/json" id="review-data">{text}</script>'


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


def _swatch(index: int) -> str:
    red, green, blue = class_colour(index)
    return f'<span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>'


def _class_label(data: ReportData, index: int) -> str:
    return f"{_swatch(index)}{escape(str(data.class_names[index]))}"


def _header(data: ReportData) -> str:
    n_whole = int(data.regions["whole_image"].astype(bool).sum())
    per_class = data.images_per_class()
    n_empty = int(sum(1 for count in per_class if count == 0))
    stats = [
        ("images", len(data.images)),
        ("regions", len(data.regions)),
        ("classes with images" if n_empty else "classes", len(per_class) - n_empty),
        ("whole-image regions", n_whole),
    ]
    if n_empty:
        stats.append(("empty classes", n_empty))
    if "unknown" in data.images.columns:
        stats.append(("unknown images", int(data.images["unknown"].astype(bool).sum())))
    items = "".join(f"<li><b>{value}</b>{escape(label)}</li>" for label, value in stats)
    chips = "".join(
        f'<a class="chip" href="#class-{index}">{_class_label(data, index)}&nbsp;<b>{count or "empty"}</b></a>'
        for index, count in enumerate(per_class)
    )
    facts = [f"run {data.run_id}" if data.run_id else "", f"detector {data.detector}" if data.detector else ""]
    facts.append(f"written {data.created}")
    subtitle = " &middot; ".join(escape(fact) for fact in facts if fact)
    links = [("metrics", "Metrics"), ("sizes", "Class sizes"), ("embedding", "Embedding"), ("mebin", "MEBin")]
    if "unknown" in data.images.columns:
        links.insert(2, ("unknown", "Unknown"))
    nav = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in [*links, ("settings", "Settings")])
    return (
        f"<header><h1>{escape(data.title)}</h1>"
        '<p class="sub">Defect-class discovery report: images per predicted class, with region boxes, '
        f"anomaly maps and the largest region of each image (click one to enlarge it).<br>{subtitle}</p>"
        f'<ul class="stats">{items}</ul><div class="chips">images per class: {chips}</div>'
        f"<nav>{nav}</nav></header>"
    )


def _metrics_section(data: ReportData) -> str:
    if not data.metrics:
        return (
            '<section id="metrics"><h2>Metrics</h2>'
            '<p class="note">Ground truth was not available for this run, so no clustering metrics are shown.</p>'
            "</section>"
        )
    head = "".join(f"<th>{label}</th>" for _, label in METRIC_NAMES)
    rows = []
    for level, stored in data.metrics.items():
        values = stored if isinstance(stored, Mapping) else {}
        cells = "".join(
            f"<td>{_number(values.get(key), 0 if key == 'n_samples' else 3)}</td>" for key, _ in METRIC_NAMES
        )
        rows.append(f'<tr><th class="row">{escape(str(level))}</th>{cells}</tr>')
    table = f'<table><tr><th class="row">level</th>{head}</tr>{"".join(rows)}</table>'
    return (
        '<section id="metrics"><h2>Metrics</h2>'
        '<p class="note">NMI, ARI and Hungarian-matched accuracy (F1) against the ground-truth defect types.</p>'
        f"{table}{_confusion_html(data)}</section>"
    )


def _confusion_frame(data: ReportData) -> pd.DataFrame | None:
    """The image-level confusion: as given, or rebuilt from the image metrics' ``confusion`` entry."""
    if data.confusion is not None:
        return data.confusion
    stored = (data.metrics or {}).get("image", {})
    table = stored.get("confusion") if isinstance(stored, Mapping) else None
    if not isinstance(table, Mapping) or not {"index", "columns", "data"} <= table.keys():
        return None
    return pd.DataFrame(table["data"], index=table["index"], columns=table["columns"])


def _confusion_html(data: ReportData) -> str:
    frame = _confusion_frame(data)
    if frame is None or frame.empty:
        return ""
    head = "".join(f"<th>{escape(_cluster_heading(data, column))}</th>" for column in frame.columns)
    rows = []
    for label, counts in frame.iterrows():
        # Matched clusters are named after their class, so a match is where the labels agree.
        cells = "".join(
            f"<td{_DIAGONAL if str(column) == str(label) else ''}>{_number(count, 0)}</td>"
            for column, count in counts.items()
        )
        rows.append(f'<tr><th class="row">{escape(str(label))}</th>{cells}</tr>')
    return (
        '<h3>Image-level confusion</h3><p class="note">Rows: true defect types; columns: the classes of the '
        "galleries, each with the true type it was matched to (matched classes first, so matches lie on the "
        "diagonal).</p>"
        f'<table><tr><th class="row">true \\ cluster</th>{head}</tr>{"".join(rows)}</table>'
    )


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


def _figure_section(anchor: str, title: str, png: bytes | None, alt: str, missing: str = "") -> str:
    if png is None:
        content = f'<p class="note">{escape(missing)}</p>'
    else:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        content = f'<img class="plot" src="{uri}" alt="{escape(alt)}">'
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>'


def _embedding_section(data: ReportData, layout: EmbeddingLayout | None, png: bytes | None) -> str:
    """The region embedding as an inline SVG: a point names its image, a click shows it in its gallery."""
    if layout is None:
        return _figure_section(
            "embedding",
            "Region embedding",
            png,
            "2-D embedding of the region features, coloured by class",
            missing="No embedding: region features were not given, or there are fewer than 5 regions.",
        )
    width, height, margin = 720.0, 480.0, 12.0
    low, high = layout.points.min(axis=0), layout.points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = margin + (layout.points - low) / span * np.array([width - 2 * margin, height - 2 * margin])
    circles = []
    for row, (x, y) in zip(layout.rows, scaled, strict=True):
        region = data.regions.iloc[int(row)]
        path = str(data.images.at[int(region["image_index"]), "image_path"])
        class_index = int(region["pred_class"])
        red, green, blue = class_colour(class_index)
        title = f"{data.class_names[class_index]}: {path}"
        circles.append(
            f'<circle cx="{x:.1f}" cy="{height - y:.1f}" r="4" fill="rgb({red},{green},{blue})" '
            f'data-image="{escape(path)}"><title>{escape(title)}</title></circle>'
        )
    shown = str(layout.n_regions)
    if len(layout.rows) < layout.n_regions:
        shown = f"{len(layout.rows)} of {shown}"
    legend = " ".join(f'<span class="chip">{_class_label(data, i)}</span>' for i in range(len(data.class_names)))
    return (
        '<section id="embedding"><h2>Region embedding</h2>'
        f'<p class="note">{escape(layout.method)} of the region features ({shown} regions), coloured by class: '
        "hover a point for its image, click it to see the image in its gallery; the image's points are "
        f'outlined when you click its name in a gallery.</p><div class="chips">{legend}</div>'
        f'<svg id="embedding-points" class="embedding" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="region embedding">'
        f"{''.join(circles)}</svg></section>"
    )


def _regions_by_image(regions: pd.DataFrame) -> dict[int, np.ndarray]:
    """Row positions of each image's regions, computed once for all galleries."""
    if regions.empty:
        return {}
    groups = regions.groupby("image_index", sort=False).indices
    return {int(image): rows for image, rows in groups.items()}


def _gallery_sections(data: ReportData) -> Iterable[str]:
    by_image = _regions_by_image(data.regions)
    for index in range(len(data.class_names)):
        yield _gallery_section(data, index, by_image)


def _gallery_section(data: ReportData, index: int, by_image: Mapping[int, np.ndarray]) -> str:
    members = data.images.loc[data.images["pred_class"].to_numpy() == index]
    heading = f'<h2>{_class_label(data, index)} <span class="note">class {index}</span></h2>'
    name = escape(str(data.class_names[index]))
    if members.empty:
        return (
            f'<section id="class-{index}" class="gallery" data-class="{name}">{heading}'
            '<p class="note">This class is empty: no image was assigned to it.</p></section>'
        )
    ranked = members.sort_values("confidence", ascending=False, kind="stable", na_position="last")
    shown = ranked.index[: data.max_per_class]
    cards = "".join(_card(data, int(row), by_image.get(int(row), np.empty(0, dtype=np.int64))) for row in shown)
    count = f"showing {len(shown)} of {len(members)} images, highest confidence first"
    if data.object_prior is not None:
        prior = escape(str(getattr(data.object_prior, "name", "")))
        count += f"; yellow line: the object found by the {prior} object prior"
    if str(data.class_names[index]) == "normal":
        count += (
            ". Normal holds two kinds of image, each card says which: nothing found by the detector "
            "(no region), and regions the model judged over-detections"
        )
    return (
        f'<section id="class-{index}" class="gallery" data-class="{name}">{heading}<p class="note">{count}</p>'
        f'<div class="grid">{cards}</div></section>'
    )


def _unknown_section(data: ReportData) -> str:
    """Images that fit no class (when the table says), least typical first; they also stay in their nearest class."""
    if "unknown" not in data.images.columns:
        return ""
    members = data.images.loc[data.images["unknown"].astype(bool).to_numpy()]
    heading = '<h2>unknown <span class="note">fits no class</span></h2>'
    if members.empty:
        return (
            f'<section id="unknown" class="gallery">{heading}'
            '<p class="note">No image scored above the unknown threshold.</p></section>'
        )
    ranked = members.sort_values("unknown_score", ascending=False, kind="stable", na_position="last")
    shown = ranked.index[: data.max_per_class]
    by_image = _regions_by_image(data.regions)
    cards = "".join(_card(data, int(row), by_image.get(int(row), np.empty(0, dtype=np.int64))) for row in shown)
    count = (
        f"showing {len(shown)} of {len(members)} images, least typical first; each is also shown in the gallery "
        "of its nearest class"
    )
    return (
        f'<section id="unknown" class="gallery">{heading}<p class="note">{count}</p>'
        f'<div class="grid">{cards}</div></section>'
    )


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


def _thumb(uri: str, caption: str, name: str) -> str:
    return (
        f'<figure class="thumb"><div class="frame"><img src="{uri}" alt="{escape(caption)} of {escape(name)}">'
        f"</div><figcaption>{escape(caption)}</figcaption></figure>"
    )


def _thumbs_html(thumbnails: Thumbnails | str, name: str) -> str:
    if isinstance(thumbnails, str):
        missing = '<figure class="thumb"><div class="frame missing">image unavailable</div></figure>'
        return f'<div class="thumbs">{missing * 3}</div><div class="error">{escape(thumbnails)}</div>'
    crop_caption = "whole image" if thumbnails.crop_is_whole_image else "largest region"
    return (
        f'<div class="thumbs">{_thumb(thumbnails.boxes, "regions", name)}'
        f"{_thumb(thumbnails.overlay, 'anomaly map', name)}{_thumb(thumbnails.crop, crop_caption, name)}</div>"
    )


def _card(data: ReportData, row: int, region_rows: np.ndarray) -> str:
    image = data.images.loc[row]
    path = str(image["image_path"])
    name = data.display_name(row)  # the type folders too: datasets reuse file names across types
    facts = [
        ("confidence", _number(image["confidence"])),
        ("anomaly score", _number(image["anomaly_score"]) + _rank_note(data, row)),
        ("regions", _number(image["n_regions"], 0)),
    ]
    if "unknown_score" in image.index:
        flag = " (unknown)" if bool(image.get("unknown", False)) else ""
        threshold = "" if data.unknown_threshold is None else f" / threshold {_number(data.unknown_threshold)}"
        facts.append(("unknown score", _number(image["unknown_score"]) + threshold + flag))
    truth = image.get("defect_type")
    if is_known(truth):
        facts.append(("ground truth", escape(str(truth))))
    facts_html = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    class_name = str(data.class_names[int(image["pred_class"])])
    badge = _normal_badge(image) if class_name == "normal" else ""
    sort_keys = {
        "confidence": image["confidence"],
        "anomaly-score": image["anomaly_score"],
        "unknown-score": image.get("unknown_score"),
    }
    attributes = "".join(f' data-{key}="{_number(value, 6)}"' for key, value in sort_keys.items())
    return (
        f'<figure class="card" data-image="{escape(path)}" data-class="{escape(class_name)}"{attributes}>'
        f"{_thumbs_html(_thumbnails(data, row, region_rows), name)}"
        f'<figcaption class="meta"><div class="name" title="{escape(path)}">{escape(name)}</div>'
        f'<div class="path">{escape(path)}</div>{badge}'
        f"<dl>{facts_html}</dl></figcaption></figure>"
    )


def _rank_note(data: ReportData, row: int) -> str:
    """Where the image's detector score ranks in the run (raw scores have the detector's own units)."""
    scores = pd.to_numeric(data.images["anomaly_score"], errors="coerce")
    value = scores.iloc[row]
    if pd.isna(value) or scores.notna().sum() < 2:
        return ""
    higher = int((scores > value).sum())
    return f" (top {100.0 * (higher + 1) / int(scores.notna().sum()):.0f}%)"


def _normal_badge(image: pd.Series) -> str:
    """Why an image of the normal class is there: the detector found nothing, or the model said so."""
    n_regions = int(image["n_regions"]) if _number(image["n_regions"], 0) != "n/a" else 0
    if str(image.get("path_taken", "")) in ("none", "normal") or n_regions == 0:
        return '<div class="badge">nothing found by the detector</div>'
    return '<div class="badge">region judged an over-detection by the model</div>'


def _settings_section(data: ReportData) -> str:
    text = json.dumps(data.settings, indent=2, ensure_ascii=False, default=str)
    return (
        f'<section id="settings"><details><summary>Run settings</summary><pre>{escape(text)}</pre></details></section>'
    )
