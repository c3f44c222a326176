# Copyright (C) 2025 anomalib-ncd developers
# SPDX-License-Identifier: Apache-2.0

"""Clustering metrics for defect-class discovery: NMI, ARI and Hungarian-matched accuracy.

A clustering is compared with the true defect classes in three ways, as in the AnomalyNCD
and Anomaly Clustering papers:

* **NMI**, normalised mutual information with the arithmetic mean of the two entropies
  (:func:`sklearn.metrics.normalized_mutual_info_score`);
* **ARI**, the adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`);
* **F1**, which the papers compute as the accuracy after an optimal one-to-one matching of
  clusters to classes (the Hungarian algorithm on the contingency table). With one
  prediction per sample this equals the micro-averaged F1 of the matched labelling.

The matching is one-to-one, so the number of clusters may differ from the number of classes:
with more clusters than classes the surplus clusters stay unmatched and their samples count as
errors; with fewer, some classes receive no cluster and have recall 0.

Labels may be any hashable values (ints, strings, ...). Classes and clusters are ordered by
their sorted unique values, which makes the matching and every table deterministic.

Example:
    >>> report = clustering_report(["hole", "hole", "crack", "crack"], [1, 1, 0, 0])
    >>> str(report)
    'NMI 1.000 / ARI 1.000 / F1 1.000 (n=4)'
    >>> report.mapping
    {0: 'crack', 1: 'hole'}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

Labels = Iterable[Hashable] | np.ndarray
"""A one-dimensional sequence or array of hashable labels (class names, cluster ids)."""


@dataclass(frozen=True)
class _Contingency:
    """Counts of samples per (true class, predicted cluster), with the label orders used."""

    classes: list[Hashable]
    clusters: list[Hashable]
    true_codes: np.ndarray
    pred_codes: np.ndarray
    counts: np.ndarray  # (n_classes, n_clusters)


def _is_missing(value: object) -> bool:
    """Whether a label is None, NaN or a pandas missing value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _to_label_list(values: Labels, name: str) -> list[Hashable]:
    """Turn an array-like of labels into a list of plain Python values."""
    if isinstance(values, str | bytes):
        msg = f"{name} must be a sequence of labels, not a single {type(values).__name__}"
        raise TypeError(msg)
    if hasattr(values, "tolist"):  # numpy arrays, pandas Series, torch tensors
        ndim = getattr(values, "ndim", 1)
        if ndim != 1:
            msg = f"{name} must be one-dimensional, got {ndim} dimensions"
            raise ValueError(msg)
        values = values.tolist()
    labels = [value.item() if isinstance(value, np.generic) else value for value in values]
    for index, label in enumerate(labels):
        if _is_missing(label):
            msg = f"{name} contains a missing label ({label!r}) at position {index}"
            raise ValueError(msg)
        if not isinstance(label, Hashable):
            msg = f"{name} contains an unhashable label of type {type(label).__name__} at position {index}"
            raise TypeError(msg)
    return labels


def _sorted_unique(labels: list[Hashable]) -> list[Hashable]:
    """Sorted distinct labels; mixed, mutually unorderable types fall back to a type-then-repr order."""
    unique = set(labels)
    try:
        return sorted(unique)  # type: ignore[type-var]
    except TypeError:
        return sorted(unique, key=lambda label: (type(label).__name__, repr(label)))


def _contingency(y_true: Labels, y_pred: Labels) -> _Contingency:
    """Validate the two labellings and count samples per (class, cluster) pair."""
    true_labels = _to_label_list(y_true, "y_true")
    pred_labels = _to_label_list(y_pred, "y_pred")
    if len(true_labels) != len(pred_labels):
        msg = f"y_true and y_pred must have the same length, got {len(true_labels)} and {len(pred_labels)}"
        raise ValueError(msg)
    if not true_labels:
        msg = "y_true and y_pred are empty; at least one sample is needed"
        raise ValueError(msg)
    classes = _sorted_unique(true_labels)
    clusters = _sorted_unique(pred_labels)
    class_index = {label: index for index, label in enumerate(classes)}
    cluster_index = {label: index for index, label in enumerate(clusters)}
    true_codes = np.fromiter((class_index[label] for label in true_labels), dtype=np.int64, count=len(true_labels))
    pred_codes = np.fromiter((cluster_index[label] for label in pred_labels), dtype=np.int64, count=len(pred_labels))
    counts = np.zeros((len(classes), len(clusters)), dtype=np.int64)
    np.add.at(counts, (true_codes, pred_codes), 1)
    return _Contingency(classes, clusters, true_codes, pred_codes, counts)


def _match(table: _Contingency) -> dict[int, int]:
    """Hungarian matching, as ``{cluster index: class index}`` for the matched clusters only."""
    rows, cols = linear_sum_assignment(table.counts, maximize=True)
    return {int(col): int(row) for row, col in zip(rows, cols, strict=True)}


def _mapping(table: _Contingency, matched: dict[int, int]) -> dict[Hashable, Hashable | None]:
    return {
        cluster: (table.classes[matched[index]] if index in matched else None)
        for index, cluster in enumerate(table.clusters)
    }


def _matched_count(table: _Contingency, matched: dict[int, int]) -> int:
    return int(sum(table.counts[row, col] for col, row in matched.items()))


def hungarian_mapping(
    y_true: Labels,
    y_pred: Labels,
) -> dict[Hashable, Hashable | None]:
    """Match every predicted cluster to at most one true class, maximising the matched samples.

    The optimal one-to-one assignment on the (classes x clusters) contingency table is found with
    :func:`scipy.optimize.linear_sum_assignment`. When there are more clusters than classes, the
    clusters left without a class map to ``None``.

    Args:
        y_true: True class label of each sample (any hashable values, no missing labels).
        y_pred: Predicted cluster id of each sample.

    Returns:
        dict[Hashable, Hashable | None]: ``{cluster id: class label or None}`` for every cluster,
        in sorted cluster order.

    Raises:
        ValueError: If the inputs are empty, differ in length or contain missing labels.

    Example:
        >>> hungarian_mapping([0, 0, 1, 1, 1], [5, 5, 7, 7, 9])
        {5: 0, 7: 1, 9: None}
    """
    table = _contingency(y_true, y_pred)
    return _mapping(table, _match(table))


def clustering_accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Accuracy after the Hungarian matching of clusters to classes (the papers' "F1").

    Samples of unmatched clusters count as errors.

    Args:
        y_true: True class label of each sample.
        y_pred: Predicted cluster id of each sample.

    Returns:
        float: Fraction of samples whose cluster is matched to their own class, in ``[0, 1]``.

    Raises:
        ValueError: If the inputs are empty, differ in length or contain missing labels.

    Example:
        >>> clustering_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
        0.6666666666666666
    """
    table = _contingency(y_true, y_pred)
    return _matched_count(table, _match(table)) / len(table.true_codes)


def _jsonable(value: Any) -> Any:
    """A label as a JSON value: plain scalars stay, anything else becomes its string."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


@dataclass(frozen=True, eq=False)
class ClusteringReport:
    """All clustering metrics of one labelling, with the matching behind the accuracy.

    Attributes:
        nmi: Normalised mutual information (arithmetic normalisation).
        ari: Adjusted Rand index.
        f1: Hungarian-matched accuracy, see :func:`clustering_accuracy`.
        n_samples: Number of samples compared.
        per_class_recall: ``{class: fraction of its samples in its matched cluster}``; 0 for a
            class that no cluster was matched to.
        confusion: Sample counts, one row per true class (sorted) and one column per cluster.
            Matched clusters come first, named after their class and ordered like the rows, so the
            matched counts lie on the diagonal; unmatched clusters follow as
            ``"cluster <id> (unmatched)"``.
        mapping: ``{cluster id: matched class or None}``, see :func:`hungarian_mapping`.
    """

    nmi: float
    ari: float
    f1: float
    n_samples: int
    per_class_recall: dict[Hashable, float]
    confusion: pd.DataFrame
    mapping: dict[Hashable, Hashable | None]

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-serialisable values.

        Dictionary keys are strings (``str(label)``); labels that are not JSON scalars are
        written as strings.

        Returns:
            dict[str, Any]: Metrics, ``per_class_recall``, ``mapping`` and ``confusion`` as
            ``{"index": [...], "columns": [...], "data": [[...], ...]}``.
        """
        return {
            "nmi": float(self.nmi),
            "ari": float(self.ari),
            "f1": float(self.f1),
            "n_samples": int(self.n_samples),
            "per_class_recall": {str(label): float(value) for label, value in self.per_class_recall.items()},
            "mapping": {str(cluster): _jsonable(label) for cluster, label in self.mapping.items()},
            "confusion": {
                "index": [_jsonable(label) for label in self.confusion.index],
                "columns": [_jsonable(label) for label in self.confusion.columns],
                "data": [[int(count) for count in row] for row in self.confusion.to_numpy()],
            },
        }

    def __str__(self) -> str:
        return f"NMI {self.nmi:.3f} / ARI {self.ari:.3f} / F1 {self.f1:.3f} (n={self.n_samples})"


def clustering_report(y_true: Labels, y_pred: Labels) -> ClusteringReport:
    """Compute NMI, ARI, matched accuracy, per-class recall and the matched confusion table.

    Args:
        y_true: True class label of each sample (any hashable values, no missing labels).
        y_pred: Predicted cluster id of each sample.

    Returns:
        ClusteringReport: The metrics and the matching.

    Raises:
        ValueError: If the inputs are empty, differ in length, are not one-dimensional or contain
            missing labels (None or NaN).

    Example:
        >>> report = clustering_report([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
        >>> round(report.f1, 4), round(report.ari, 4)
        (0.6667, 0.2424)
        >>> list(report.confusion.columns)
        [0, 1, 'cluster 1 (unmatched)']
    """
    table = _contingency(y_true, y_pred)
    matched = _match(table)
    # sklearn sees integer codes only, so any label type (even mixed ones) is accepted.
    nmi = float(normalized_mutual_info_score(table.true_codes, table.pred_codes))
    ari = float(adjusted_rand_score(table.true_codes, table.pred_codes))
    class_sizes = table.counts.sum(axis=1)
    recall = dict.fromkeys(table.classes, 0.0)
    for col, row in matched.items():
        recall[table.classes[row]] = float(table.counts[row, col] / class_sizes[row])

    cluster_of_class = {row: col for col, row in matched.items()}
    matched_cols = [cluster_of_class[row] for row in range(len(table.classes)) if row in cluster_of_class]
    unmatched_cols = [col for col in range(len(table.clusters)) if col not in matched]
    columns = [table.classes[matched[col]] for col in matched_cols]
    columns += [f"cluster {table.clusters[col]} (unmatched)" for col in unmatched_cols]
    confusion = pd.DataFrame(
        table.counts[:, matched_cols + unmatched_cols],
        # tupleize_cols=False: tuple labels stay single labels instead of forming a MultiIndex.
        index=pd.Index(table.classes, name="true class", tupleize_cols=False),
        columns=pd.Index(columns, name="predicted cluster", tupleize_cols=False),
    )
    return ClusteringReport(
        nmi=nmi,
        ari=ari,
        f1=_matched_count(table, matched) / len(table.true_codes),
        n_samples=len(table.true_codes),
        per_class_recall=recall,
        confusion=confusion,
        mapping=_mapping(table, matched),
    )
