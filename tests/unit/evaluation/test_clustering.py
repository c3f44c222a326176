"""Tests of the clustering metrics against hand-computed values, brute force and torchmetrics."""

import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.evaluation import (
    ClusteringReport,
    clustering_accuracy,
    clustering_report,
    hungarian_mapping,
)


def brute_force_accuracy(y_true, y_pred) -> float:
    """Best one-to-one matching by trying every injective assignment."""
    classes = sorted(set(y_true))
    clusters = sorted(set(y_pred))
    pairs = list(zip(y_true, y_pred, strict=True))
    best = 0
    if len(clusters) <= len(classes):
        for chosen in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, chosen, strict=True))
            best = max(best, sum(mapping[p] == t for t, p in pairs))
    else:
        for chosen in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(chosen, classes, strict=True))
            best = max(best, sum(mapping.get(p) == t for t, p in pairs))
    return best / len(pairs)


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------


def test_perfect_clustering_with_swapped_ids():
    report = clustering_report([0, 0, 1, 1], [1, 1, 0, 0])
    assert report.nmi == pytest.approx(1.0)
    assert report.ari == pytest.approx(1.0)
    assert report.f1 == pytest.approx(1.0)
    assert report.n_samples == 4
    assert report.mapping == {0: 1, 1: 0}
    assert report.per_class_recall == {0: 1.0, 1: 1.0}
    assert clustering_accuracy([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0


def test_hand_computed_split_cluster():
    # Contingency (rows = classes 0, 1; columns = clusters 0, 1, 2):
    #   [[2, 1, 0],
    #    [0, 1, 2]]
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 2, 2]
    report = clustering_report(y_true, y_pred)

    # Matching: cluster 0 -> class 0 (2 samples), cluster 2 -> class 1 (2), cluster 1 unmatched.
    assert report.mapping == {0: 0, 1: None, 2: 1}
    assert report.f1 == pytest.approx(4 / 6, abs=1e-6)
    assert report.per_class_recall == pytest.approx({0: 2 / 3, 1: 2 / 3}, abs=1e-6)

    # ARI: sum_ij C(n_ij, 2) = 2; rows sum C(3, 2) * 2 = 6; columns C(2, 2) * 3 = 3; C(6, 2) = 15.
    expected_index = 6 * 3 / 15
    ari = (2 - expected_index) / ((6 + 3) / 2 - expected_index)
    assert ari == pytest.approx(8 / 33)
    assert report.ari == pytest.approx(ari, abs=1e-6)

    # NMI: MI = 2 * (1/3) * ln((1/3) / (1/2 * 1/3)) = (2/3) ln 2; H(true) = ln 2, H(pred) = ln 3.
    mutual_information = 2 / 3 * math.log(2)
    nmi = mutual_information / ((math.log(2) + math.log(3)) / 2)
    assert report.nmi == pytest.approx(nmi, abs=1e-6)

    # Matched clusters first, on the diagonal; the unmatched one last.
    assert list(report.confusion.index) == [0, 1]
    assert list(report.confusion.columns) == [0, 1, "cluster 1 (unmatched)"]
    assert report.confusion.to_numpy().tolist() == [[2, 0, 1], [0, 2, 1]]


def test_fewer_clusters_than_classes():
    y_true = [0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 0, 0, 1, 1]
    report = clustering_report(y_true, y_pred)
    assert report.mapping == {0: 0, 1: 2}
    assert report.f1 == pytest.approx(5 / 7)
    assert report.per_class_recall == {0: 1.0, 1: 0.0, 2: 1.0}
    assert report.confusion.shape == (3, 2)
    assert list(report.confusion.columns) == [0, 2]
    assert report.confusion.loc[1].tolist() == [2, 0]


def test_more_clusters_than_classes():
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [3, 3, 3, 7, 5, 5, 5, 9]
    mapping = hungarian_mapping(y_true, y_pred)
    assert mapping == {3: 0, 5: 1, 7: None, 9: None}
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(6 / 8)
    report = clustering_report(y_true, y_pred)
    assert list(report.confusion.columns) == [0, 1, "cluster 7 (unmatched)", "cluster 9 (unmatched)"]
    assert report.confusion.to_numpy().sum() == 8


def test_every_sample_its_own_cluster():
    report = clustering_report([0, 0, 1, 1], [0, 1, 2, 3])
    assert report.f1 == pytest.approx(0.5)
    assert sum(label is None for label in report.mapping.values()) == 2


def test_single_class_single_cluster():
    report = clustering_report(["a"] * 5, [4] * 5)
    assert report.f1 == 1.0
    assert report.nmi == pytest.approx(1.0)
    assert report.ari == pytest.approx(1.0)


def test_string_labels():
    y_true = ["scratch", "scratch", "hole", "hole", "crack"]
    y_pred = ["b", "b", "a", "a", "a"]
    report = clustering_report(y_true, y_pred)
    assert report.mapping == {"a": "hole", "b": "scratch"}
    assert report.f1 == pytest.approx(4 / 5)
    assert report.per_class_recall == {"crack": 0.0, "hole": 1.0, "scratch": 1.0}
    assert list(report.confusion.index) == ["crack", "hole", "scratch"]
    assert list(report.confusion.columns) == ["hole", "scratch"]
    # Integer-coded labels give the same metrics.
    coded = clustering_report([2, 2, 1, 1, 0], [1, 1, 0, 0, 0])
    assert (coded.nmi, coded.ari, coded.f1) == pytest.approx((report.nmi, report.ari, report.f1))


def test_numpy_inputs_give_plain_python_labels():
    report = clustering_report(np.array([0, 0, 1, 1]), np.array([5, 5, 6, 6], dtype=np.int32))
    assert all(type(key) is int for key in report.mapping)
    assert all(type(value) is int for value in report.mapping.values())
    assert report.f1 == 1.0


def test_mixed_label_types_are_accepted():
    report = clustering_report([0, "a", 0, "a"], [1, 2, 1, 2])
    assert report.f1 == 1.0


def test_permutation_invariance():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 60)
    y_pred = rng.integers(0, 5, 60)
    base = clustering_report(y_true, y_pred)

    # Renaming the clusters changes nothing.
    renamed = np.array([17, 3, 42, 8, 0])[y_pred]
    other = clustering_report(y_true, renamed)
    assert (other.nmi, other.ari, other.f1) == pytest.approx((base.nmi, base.ari, base.f1))
    assert other.per_class_recall == pytest.approx(base.per_class_recall)

    # Nor does reordering the samples.
    order = rng.permutation(60)
    shuffled = clustering_report(y_true[order], y_pred[order])
    assert (shuffled.nmi, shuffled.ari, shuffled.f1) == pytest.approx((base.nmi, base.ari, base.f1))
    pd.testing.assert_frame_equal(shuffled.confusion, base.confusion)


def test_symmetric_metrics_do_not_depend_on_argument_order():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 3, 40)
    y_pred = rng.integers(0, 3, 40)
    a = clustering_report(y_true, y_pred)
    b = clustering_report(y_pred, y_true)
    assert (a.nmi, a.ari, a.f1) == pytest.approx((b.nmi, b.ari, b.f1))


# --------------------------------------------------------------------------------------------
# Cross-checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(1, 5))
    n_clusters = int(rng.integers(1, 6))
    n_samples = int(rng.integers(1, 25))
    y_true = rng.integers(0, n_classes, n_samples).tolist()
    y_pred = rng.integers(0, n_clusters, n_samples).tolist()
    accuracy = clustering_accuracy(y_true, y_pred)
    assert accuracy == pytest.approx(brute_force_accuracy(y_true, y_pred))
    report = clustering_report(y_true, y_pred)
    assert report.f1 == pytest.approx(accuracy)
    # The mapping reproduces the accuracy and is one-to-one.
    mapping = hungarian_mapping(y_true, y_pred)
    assert sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True)) / n_samples == pytest.approx(accuracy)
    matched = [label for label in mapping.values() if label is not None]
    assert len(matched) == len(set(matched)) == min(len(set(y_true)), len(set(y_pred)))
    # Recalls weighted by class size give the accuracy back.
    sizes = {label: y_true.count(label) for label in set(y_true)}
    weighted = sum(report.per_class_recall[label] * size for label, size in sizes.items()) / n_samples
    assert weighted == pytest.approx(accuracy)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")
@pytest.mark.parametrize("seed", range(10))
def test_nmi_and_ari_match_torchmetrics(seed):
    pytest.importorskip("torchmetrics.clustering")
    import torch
    from torchmetrics.clustering import AdjustedRandScore, NormalizedMutualInfoScore

    rng = np.random.default_rng(100 + seed)
    y_true = rng.integers(0, 4, 50)
    # Half-informative predictions, so the metrics are away from both 0 and 1.
    y_pred = np.where(rng.random(50) < 0.6, (y_true + 1) % 4, rng.integers(0, 5, 50))
    report = clustering_report(y_true, y_pred)

    nmi = NormalizedMutualInfoScore(average_method="arithmetic")
    nmi.update(torch.as_tensor(y_pred), torch.as_tensor(y_true))
    ari = AdjustedRandScore()
    ari.update(torch.as_tensor(y_pred), torch.as_tensor(y_true))
    assert report.nmi == pytest.approx(float(nmi.compute()), abs=1e-5)
    assert report.ari == pytest.approx(float(ari.compute()), abs=1e-5)


# --------------------------------------------------------------------------------------------
# Report formatting
# --------------------------------------------------------------------------------------------


def test_as_dict_is_json_serialisable():
    report = clustering_report(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 2, 2]))
    data = report.as_dict()
    restored = json.loads(json.dumps(data))
    assert restored["f1"] == pytest.approx(4 / 6)
    assert restored["n_samples"] == 6
    assert restored["mapping"] == {"0": 0, "1": None, "2": 1}
    assert restored["per_class_recall"] == pytest.approx({"0": 2 / 3, "1": 2 / 3})
    assert restored["confusion"] == {
        "index": [0, 1],
        "columns": [0, 1, "cluster 1 (unmatched)"],
        "data": [[2, 0, 1], [0, 2, 1]],
    }
    assert all(type(data[key]) is float for key in ("nmi", "ari", "f1"))


def test_as_dict_with_tuple_labels():
    report = clustering_report([("a", 1), ("a", 1), ("b", 2)], [0, 0, 1])
    data = json.loads(json.dumps(report.as_dict()))
    assert data["mapping"] == {"0": "('a', 1)", "1": "('b', 2)"}
    assert list(report.confusion.index) == [("a", 1), ("b", 2)]
    assert report.confusion.shape == (2, 2)


def test_str_is_one_line():
    report = clustering_report([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    text = str(report)
    assert "\n" not in text
    assert re.fullmatch(r"NMI 0\.\d{3} / ARI 0\.\d{3} / F1 0\.\d{3} \(n=6\)", text)
    assert text == f"NMI {report.nmi:.3f} / ARI {report.ari:.3f} / F1 0.667 (n=6)"
    assert isinstance(report, ClusteringReport)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("func", [clustering_report, clustering_accuracy, hungarian_mapping])
def test_length_mismatch(func):
    with pytest.raises(ValueError, match="same length"):
        func([0, 1, 1], [0, 1])


@pytest.mark.parametrize("func", [clustering_report, clustering_accuracy, hungarian_mapping])
def test_empty_inputs(func):
    with pytest.raises(ValueError, match="empty"):
        func([], [])
    with pytest.raises(ValueError, match="empty"):
        func(np.array([]), np.array([]))


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, np.float32("nan"), pd.NA])
def test_missing_true_labels(missing):
    with pytest.raises(ValueError, match="y_true contains a missing label"):
        clustering_report([0, missing, 1], [0, 1, 1])


def test_nan_in_float_array():
    with pytest.raises(ValueError, match="position 1"):
        clustering_accuracy(np.array([0.0, np.nan, 1.0]), [0, 1, 1])


def test_missing_predicted_labels():
    with pytest.raises(ValueError, match="y_pred contains a missing label"):
        clustering_report([0, 1], [0, None])


def test_two_dimensional_input():
    with pytest.raises(ValueError, match="one-dimensional"):
        clustering_report(np.zeros((2, 2)), [0, 1])


def test_string_instead_of_sequence():
    with pytest.raises(TypeError, match="sequence of labels"):
        clustering_report("aabb", [0, 0, 1, 1])


def test_unhashable_labels():
    with pytest.raises(TypeError, match="unhashable"):
        clustering_report([[0], [1]], [0, 1])
