"""The report's figures as PNG bytes: region embedding, MEBin threshold sweeps and class sizes.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through
``pyplot``, so no global state is touched (safe in threads and next to any other backend). Every
figure is deterministic: fixed seeds, no timestamps in the PNG metadata.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from anomalib_ncd.report.thumbnails import class_colour

logger = logging.getLogger(__name__)

MIN_EMBEDDING_POINTS: int = 5
"""Fewer regions than this give no embedding plot (t-SNE needs a few neighbours)."""

MAX_EMBEDDING_POINTS: int = 2000
"""Larger region sets are subsampled (deterministically) to this many points for the embedding."""

PCA_DIMS: int = 50
"""Features are reduced to this many dimensions by PCA before t-SNE."""

DPI: int = 100
"""Resolution of every figure."""


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    """PNG bytes of a figure; the ``Software`` stamp is dropped so the bytes depend only on the data."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _rgb(index: int) -> tuple[float, float, float]:
    red, green, blue = class_colour(index)
    return red / 255, green / 255, blue / 255


def subsample_indices(n: int, limit: int = MAX_EMBEDDING_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` points, the same on every call.

    Args:
        n: number of points.
        limit: largest number of indices returned.
        seed: seed of the random choice.

    Returns:
        All of ``0 .. n-1`` when ``n <= limit``, otherwise ``limit`` of them chosen at random.

    Example:
        >>> subsample_indices(4).tolist()
        [0, 1, 2, 3]
        >>> len(subsample_indices(5000))
        2000
    """
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _pca(features: np.ndarray, dims: int) -> np.ndarray:
    """PCA to ``dims`` components, padded with zeros when the data has fewer."""
    dims_available = min(dims, features.shape[0], features.shape[1])
    # Identical features have zero variance: PCA then divides 0 by 0 for its explained-variance ratio.
    with np.errstate(divide="ignore", invalid="ignore"):
        reduced = PCA(n_components=dims_available, random_state=0).fit_transform(features)
    return _pad_columns(reduced, dims)


def _pad_columns(values: np.ndarray, dims: int) -> np.ndarray:
    """Append zero columns up to ``dims`` (a constant column changes no distance)."""
    if values.shape[1] >= dims:
        return values
    return np.pad(values, ((0, 0), (0, dims - values.shape[1])))


def embed_2d(features: np.ndarray) -> tuple[np.ndarray, str]:
    """Embed features in 2-D: PCA to 50 dimensions, then t-SNE (PCA-2D if t-SNE fails).

    Args:
        features: ``(n, d)`` array with ``n >= 2``.

    Returns:
        ``(points, method)``: the ``(n, 2)`` coordinates and ``"t-SNE"`` or ``"PCA"``.
    """
    values = np.asarray(features, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)  # inf would overflow the variances into NaN
    # t-SNE's PCA initialisation needs two feature columns; 1-D features get a zero column.
    reduced = _pca(values, PCA_DIMS) if values.shape[1] > PCA_DIMS else _pad_columns(values, 2)
    if np.ptp(reduced, axis=0).max() <= 0:
        # All points equal: t-SNE would scale its initialisation by a zero spread and crash in native code.
        return np.zeros((len(values), 2)), "PCA"
    try:
        points = _tsne(reduced)
    except Exception as error:  # any t-SNE failure: PCA always works
        logger.warning("t-SNE failed (%s); the embedding plot uses PCA instead", error)
        return _pca(values, 2), "PCA"
    if not np.isfinite(points).all():
        logger.warning("t-SNE gave non-finite points; the embedding plot uses PCA instead")
        return _pca(values, 2), "PCA"
    return points, "t-SNE"


def _tsne(values: np.ndarray) -> np.ndarray:
    """t-SNE to 2-D with a perplexity that suits small sets: ``min(30, (n - 1) / 3)``."""
    perplexity = min(30.0, (len(values) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
    # One OpenMP thread: the same result on any machine, and several times faster on a busy CPU
    # (threads spinning for a shared core cost more than they bring at these sizes).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(values)


@dataclass(frozen=True)
class EmbeddingLayout:
    """The 2-D layout of the region features, computed once for the PNG figure and the page's SVG.

    Attributes:
        rows: the region rows shown (all, or a seeded subsample of large sets).
        points: ``(len(rows), 2)`` coordinates.
        method: ``"t-SNE"`` or ``"PCA"``.
        n_regions: regions in the run.
    """

    rows: np.ndarray
    points: np.ndarray
    method: str
    n_regions: int


def embedding_layout(features: np.ndarray | None) -> EmbeddingLayout | None:
    """Lay the region features out in 2-D.

    Args:
        features: ``(R, D)`` region features, or ``None``.

    Returns:
        The layout, or ``None`` without features or with fewer than :data:`MIN_EMBEDDING_POINTS` regions.
    """
    if features is None or len(features) < MIN_EMBEDDING_POINTS:
        return None
    keep = subsample_indices(len(features))
    points, method = embed_2d(np.asarray(features)[keep])
    return EmbeddingLayout(rows=np.asarray(keep), points=points, method=method, n_regions=len(features))


def embedding_plot(
    layout: EmbeddingLayout | None,
    classes: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> bytes | None:
    """Scatter plot of the region features in 2-D, coloured by predicted class.

    Args:
        layout: the layout from :func:`embedding_layout`, or ``None``.
        classes: predicted class of each region.
        class_names: display name of each class index.

    Returns:
        PNG bytes, or ``None`` without a layout.
    """
    if layout is None:
        return None
    keep, points, method, n_regions = layout.rows, layout.points, layout.method, layout.n_regions
    labels = np.asarray(classes, dtype=np.int64)[keep]
    figure = _figure(7.5, 5.5)
    axes = figure.add_subplot()
    for index in np.unique(labels):
        chosen = labels == index
        axes.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=18 if len(keep) <= 500 else 8,
            color=_rgb(int(index)),
            alpha=0.8,
            linewidths=0,
            label=f"{class_names[index]} ({int(chosen.sum())})",
        )
    shown = f"{len(keep)} of {n_regions}" if len(keep) < n_regions else f"{len(keep)}"
    axes.set_title(f"Region features ({method}, {shown} regions)")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title="class", markerscale=1.5)
    return _png(figure)


def _plot_mebin_curve(axes: Any, curve: dict) -> None:
    counts = np.ravel(curve["count_sequence"]).astype(np.int64)
    thresholds = np.ravel(curve["thresholds"]).astype(np.float64)
    axes.step(thresholds, counts, where="mid", color="#1f4e79", linewidth=1.5)
    interval = curve.get("stable_interval")
    if interval is not None:
        start, end = sorted((thresholds[int(interval[0])], thresholds[int(interval[1])]))
        axes.axvspan(start, end, color="#2ca02c", alpha=0.2, label="stable interval")
    axes.axvline(float(curve["chosen_threshold"]), color="#d62728", linestyle="--", label="chosen threshold")
    axes.set_title(str(curve["image"]), fontsize=9)
    axes.set_xlabel("normalised threshold")
    axes.set_ylabel("components")
    axes.set_xlim(0, 255)
    axes.set_ylim(bottom=0)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize=7, loc="best")


def mebin_curves_plot(curves: Sequence[dict], columns: int = 3) -> bytes | None:
    """Component count against the normalised threshold, one panel per image.

    Args:
        curves: entries with ``image``, ``count_sequence``, ``thresholds``, ``stable_interval``
            (indices into the sweep, or ``None``) and ``chosen_threshold``.
        columns: panels per row.

    Returns:
        PNG bytes, or ``None`` when there is no curve.
    """
    if not curves:
        return None
    columns = min(columns, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure = _figure(4.0 * columns, 3.0 * rows)
    for position, curve in enumerate(curves):
        _plot_mebin_curve(figure.add_subplot(rows, columns, position + 1), curve)
    return _png(figure)


def class_count_plot(estimate: dict | None) -> bytes | None:
    """The score of each candidate number of classes, the chosen one marked.

    Args:
        estimate: ``{"candidates", "scores", "n_classes", "criterion"}``, or ``None``.

    Returns:
        PNG bytes, or ``None`` without an estimate.
    """
    if not estimate:
        return None
    figure = _figure(5.0, 3.0)
    axes = figure.add_subplot()
    axes.plot(estimate["candidates"], estimate["scores"], marker="o", color=_rgb(0))
    axes.axvline(estimate["n_classes"], color=_rgb(3), linestyle="--", label=f"chosen: {estimate['n_classes']}")
    axes.set_xlabel("number of classes (normal included)")
    axes.set_ylabel(str(estimate.get("criterion", "score")), fontsize=8)
    axes.set_xticks(estimate["candidates"])
    axes.legend(fontsize=8)
    return _png(figure)


def class_sizes_plot(
    images_per_class: Sequence[int],
    regions_per_class: Sequence[int],
    class_names: Sequence[str],
) -> bytes:
    """Bar chart of the images per predicted class, each bar labelled with its image and region counts.

    Args:
        images_per_class: images in each class.
        regions_per_class: regions in each class.
        class_names: display name of each class index.

    Returns:
        PNG bytes.
    """
    positions = np.arange(len(class_names))
    figure = _figure(max(4.0, 0.9 * len(class_names) + 2.0), 3.6)
    axes = figure.add_subplot()
    bars = axes.bar(positions, images_per_class, color=[_rgb(int(index)) for index in positions])
    counts = zip(images_per_class, regions_per_class, strict=True)
    labels = [f"{images}\n({regions} reg.)" for images, regions in counts]
    axes.bar_label(bars, labels=labels, fontsize=8, padding=2)
    axes.set_xticks(positions, [str(name) for name in class_names], rotation=30 if len(class_names) > 6 else 0)
    axes.set_ylabel("images")
    axes.set_ylim(0, max([*images_per_class, 1]) * 1.3)  # room for the bar labels
    locator = axes.yaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # matplotlib's default AutoLocator is one
        locator.set_params(integer=True)  # counts: no 0.5 ticks
    axes.set_title("Images per class")
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)
