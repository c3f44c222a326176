"""Tests of the k-means and Anomaly Clustering baselines on synthetic data."""

import math

import numpy as np
import pytest

from anomalib_ncd.baselines import AnomalyClustering, KMeansBaseline, auto_temperature, l2_normalize
from anomalib_ncd.evaluation import clustering_accuracy


def make_blobs(seed=0, n_per_class=30, n_classes=4, dim=16):
    """Well-separated blobs around orthogonal directions (separated in both geometries)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = 10.0 * np.eye(dim)[:n_classes]
    features = centres[labels] + rng.normal(0, 0.3, (len(labels), dim))
    return features, labels


def make_bags(seed=0, n_per_class=20, n_classes=3, n_patches=50, n_defect=3, dim=32):
    """Images as bags of patches: a few high-score defect patches carry the class prototype,
    the many low-score patches are background drawn from one shared distribution."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0, 2.0, (n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = np.empty((len(labels), n_patches, dim))
    scores = np.empty((len(labels), n_patches))
    for index, label in enumerate(labels):
        background = rng.normal(0, 2.0, dim)  # image-specific texture, unrelated to the class
        features[index] = background + rng.normal(0, 0.5, (n_patches, dim))
        scores[index] = rng.normal(0, 1, n_patches)
        defect = rng.choice(n_patches, n_defect, replace=False)
        features[index, defect] = prototypes[label] + rng.normal(0, 0.5, (n_defect, dim))
        scores[index, defect] = 10 + rng.normal(0, 0.5, n_defect)
    return features, scores, labels


# --------------------------------------------------------------------------------------------
# KMeansBaseline
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_kmeans_separates_blobs(normalize):
    features, labels = make_blobs()
    model = KMeansBaseline(n_clusters=4, normalize=normalize)
    predicted = model.fit_predict(features)
    assert predicted.shape == (120,)
    assert predicted.dtype == np.int64
    assert clustering_accuracy(labels, predicted) == 1.0
    assert np.array_equal(model.labels_, predicted)
    assert model.cluster_centers_.shape == (4, 16)
    assert model.n_features_in_ == 16


def test_kmeans_normalisation_uses_directions():
    # Two directions, each at very different lengths: only cosine geometry groups by direction.
    rng = np.random.default_rng(1)
    lengths = np.tile([1.0, 100.0], 20)
    directions = np.repeat(np.array([[1.0, 0.2], [0.2, 1.0]]), 20, axis=0)
    features = directions * lengths[:, None] + rng.normal(0, 0.01, (40, 2))
    labels = np.repeat([0, 1], 20)
    assert clustering_accuracy(labels, KMeansBaseline(2).fit_predict(features)) == 1.0
    assert clustering_accuracy(labels, KMeansBaseline(2, normalize=False).fit_predict(features)) < 1.0
    centres = KMeansBaseline(2).fit(features).cluster_centers_
    assert np.linalg.norm(centres, axis=1) == pytest.approx([1.0, 1.0], abs=0.01)


def test_kmeans_is_deterministic_and_predicts():
    features, _ = make_blobs(seed=2)
    first = KMeansBaseline(4, seed=7).fit_predict(features)
    second = KMeansBaseline(4, seed=7).fit_predict(features)
    assert np.array_equal(first, second)
    model = KMeansBaseline(4).fit(features)
    assert np.array_equal(model.predict(features), model.labels_)
    assert np.array_equal(model.predict(features * 3.0), model.labels_)  # scale-free when normalised


def test_kmeans_accepts_float32_and_lists():
    features, labels = make_blobs(seed=3)
    from_float32 = KMeansBaseline(4).fit_predict(features.astype(np.float32))
    from_list = KMeansBaseline(4).fit_predict(features.tolist())
    assert clustering_accuracy(labels, from_float32) == 1.0
    assert clustering_accuracy(labels, from_list) == 1.0


def test_kmeans_zero_row_is_not_nan():
    features = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    model = KMeansBaseline(2).fit(features)
    assert np.isfinite(model.cluster_centers_).all()
    assert l2_normalize(features)[0].tolist() == [0.0, 0.0]


def test_kmeans_errors():
    features, _ = make_blobs(n_per_class=2, n_classes=2)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        KMeansBaseline(5).fit(features)
    bad = features.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        KMeansBaseline(2).fit(bad)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf.*rows \[1\]"):
        KMeansBaseline(2).fit(bad)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        KMeansBaseline(2).fit(features[0])
    with pytest.raises(ValueError, match="n_clusters"):
        KMeansBaseline(0)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeansBaseline(2.5)
    with pytest.raises(ValueError, match="n_init"):
        KMeansBaseline(2, n_init=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeansBaseline(2).predict(features)
    with pytest.raises(ValueError, match="columns"):
        KMeansBaseline(2).fit(features).predict(features[:, :3])


# --------------------------------------------------------------------------------------------
# AnomalyClustering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anomaly_clustering_finds_classes_that_mean_pooling_misses(seed):
    features, scores, labels = make_bags(seed)
    weighted = AnomalyClustering(n_clusters=3).fit_predict(features, scores)
    mean_pooled = AnomalyClustering(n_clusters=3, temperature=1e9).fit_predict(features, scores)
    assert clustering_accuracy(labels, weighted) >= 0.95
    assert clustering_accuracy(labels, mean_pooled) <= 0.7


def test_anomaly_clustering_fitted_attributes():
    features, scores, _ = make_bags()
    model = AnomalyClustering(n_clusters=3).fit(features, scores)
    assert model.temperature_ == pytest.approx(np.std(scores))
    assert model.temperature_ == pytest.approx(auto_temperature(scores))
    assert model.embeddings_.shape == (60, 32)
    assert np.linalg.norm(model.embeddings_, axis=1) == pytest.approx(np.ones(60))
    assert model.labels_.shape == (60,)
    assert model.labels_.dtype == np.int64
    assert model.n_features_in_ == 32
    assert np.allclose(model.embed(features, scores), model.embeddings_)


def test_embedding_is_the_softmax_weighted_mean():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 5, 3))
    scores = rng.normal(size=(2, 5))
    tau = 0.7
    expected = []
    for z, s in zip(features, scores, strict=True):
        weights = np.exp(s / tau) / np.exp(s / tau).sum()
        expected.append(weights @ z)
    model = AnomalyClustering(n_clusters=1, temperature=tau, normalize=False)
    assert np.allclose(model.embed(features, scores), np.array(expected))
    normalised = AnomalyClustering(n_clusters=1, temperature=tau).embed(features, scores)
    assert np.allclose(normalised, l2_normalize(np.array(expected)))


def test_auto_temperature_is_scale_and_shift_invariant():
    features, scores, _ = make_bags(n_per_class=4)
    model = AnomalyClustering(n_clusters=3, normalize=False)
    base = model.embed(features, scores)
    assert np.allclose(model.embed(features, 10.0 * scores), base, atol=1e-12)
    assert np.allclose(model.embed(features, 0.001 * scores - 5.0), base, atol=1e-12)
    assert model.resolve_temperature(10.0 * scores) == pytest.approx(10.0 * model.resolve_temperature(scores))
    # A fixed temperature is in score units, so rescaling the scores changes it.
    fixed = AnomalyClustering(n_clusters=3, temperature=1.0, normalize=False)
    assert not np.allclose(fixed.embed(features, 10.0 * scores), fixed.embed(features, scores))


def test_one_std_above_gets_e_times_the_weight():
    # One-hot features make the (unnormalised) embedding equal to the weights.
    scores = np.array([[0.0, 1.0, 2.5, 4.0], [1.0, 1.0, 0.5, 3.0]])
    features = np.tile(np.eye(4), (2, 1, 1))
    std = scores.std()
    weights = AnomalyClustering(n_clusters=1, normalize=False).embed(features, scores)
    assert weights.sum(axis=1) == pytest.approx([1.0, 1.0])
    for image in range(2):
        for i in range(4):
            for j in range(4):
                # w_i / w_j = e ** ((s_i - s_j) / std): e per standard deviation of score difference.
                expected = (scores[image, i] - scores[image, j]) / std
                assert np.log(weights[image, i] / weights[image, j]) == pytest.approx(expected)


def test_constant_scores_give_mean_pooling():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(6, 8, 4))
    scores = np.full((6, 8), 3.0)
    model = AnomalyClustering(n_clusters=2, normalize=False).fit(features, scores)
    assert math.isinf(model.temperature_)
    assert np.isfinite(model.embeddings_).all()
    assert np.allclose(model.embeddings_, features.mean(axis=1))
    normalised = AnomalyClustering(n_clusters=2).fit(features, scores)
    assert np.allclose(normalised.embeddings_, l2_normalize(features.mean(axis=1)))


def test_temperature_limits():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(5, 7, 3))
    scores = rng.normal(size=(5, 7))
    hot = AnomalyClustering(n_clusters=1, temperature=1e9, normalize=False).embed(features, scores)
    infinite = AnomalyClustering(n_clusters=1, temperature=math.inf, normalize=False).embed(features, scores)
    cold = AnomalyClustering(n_clusters=1, temperature=1e-9, normalize=False).embed(features, scores)
    assert np.allclose(hot, features.mean(axis=1))
    assert np.allclose(infinite, features.mean(axis=1))
    assert np.allclose(cold, features[np.arange(5), scores.argmax(axis=1)])


def test_softmax_is_numerically_stable():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(3, 6, 4))
    scores = rng.normal(size=(3, 6)) * 1e4 + 1e6  # exp(score) would overflow
    with np.errstate(all="raise"):
        embeddings = AnomalyClustering(n_clusters=1, temperature=1.0, normalize=False).embed(features, scores)
    assert np.isfinite(embeddings).all()
    assert np.allclose(embeddings, features[np.arange(3), scores.argmax(axis=1)])
    tiny = AnomalyClustering(n_clusters=1, temperature=1e-300, normalize=False).embed(features, scores / 1e6)
    assert np.isfinite(tiny).all()


def test_list_input_with_different_patch_counts():
    features, scores, labels = make_bags(seed=3)
    # Drop a different number of (low-score) patches per image.
    feature_list, score_list = [], []
    for index, (z, s) in enumerate(zip(features, scores, strict=True)):
        keep = np.argsort(s)[index % 5 :]
        feature_list.append(z[keep])
        score_list.append(s[keep])
    predicted = AnomalyClustering(n_clusters=3).fit_predict(feature_list, score_list)
    assert clustering_accuracy(labels, predicted) >= 0.95
    # Arrays and lists of the same bags give the same result.
    from_array = AnomalyClustering(n_clusters=3).fit(features, scores)
    from_list = AnomalyClustering(n_clusters=3).fit(list(features), list(scores))
    assert np.allclose(from_array.embeddings_, from_list.embeddings_)
    assert np.array_equal(from_array.labels_, from_list.labels_)


def test_anomaly_clustering_is_deterministic():
    features, scores, _ = make_bags(seed=4)
    first = AnomalyClustering(n_clusters=3).fit_predict(features, scores)
    second = AnomalyClustering(n_clusters=3).fit_predict(features.copy(), scores.copy())
    assert np.array_equal(first, second)


@pytest.mark.parametrize("linkage", ["ward", "average", "complete"])
def test_other_linkages_run(linkage):
    features, scores, labels = make_bags(seed=5)
    predicted = AnomalyClustering(n_clusters=3, linkage=linkage).fit_predict(features, scores)
    assert predicted.shape == labels.shape


def test_single_image():
    features = np.ones((1, 4, 2))
    scores = np.arange(4.0)[None]
    assert AnomalyClustering(n_clusters=1).fit_predict(features, scores).tolist() == [0]


def test_anomaly_clustering_errors():
    features, scores, _ = make_bags(n_per_class=2)
    with pytest.raises(ValueError, match="larger than the number of images"):
        AnomalyClustering(n_clusters=7).fit(features, scores)
    with pytest.raises(ValueError, match="6 images but patch_scores has 5"):
        AnomalyClustering(n_clusters=2).fit(features, scores[:5])
    with pytest.raises(ValueError, match=r"image 0: patch scores must have shape \(50,\)"):
        AnomalyClustering(n_clusters=2).fit(features, scores[:, :40])
    bad_scores = scores.copy()
    bad_scores[2, 3] = np.nan
    with pytest.raises(ValueError, match="image 2: patch scores contain NaN"):
        AnomalyClustering(n_clusters=2).fit(features, bad_scores)
    bad_features = features.copy()
    bad_features[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="image 1: patch features contain NaN or inf"):
        AnomalyClustering(n_clusters=2).fit(bad_features, scores)
    with pytest.raises(ValueError, match=r"\(N, P, C\)"):
        AnomalyClustering(n_clusters=2).fit(features[0], scores)
    with pytest.raises(ValueError, match=r"\(N, P\)"):
        AnomalyClustering(n_clusters=2).fit(features, scores[0])
    with pytest.raises(ValueError, match="channels"):
        AnomalyClustering(n_clusters=1).fit([features[0], features[1, :, :5]], [scores[0], scores[1]])
    with pytest.raises(ValueError, match="empty"):
        AnomalyClustering(n_clusters=1).fit([], [])
    with pytest.raises(ValueError, match="P, C >= 1"):
        AnomalyClustering(n_clusters=1).fit([np.zeros((0, 3))], [np.zeros(0)])


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), "mean", True])
def test_invalid_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        AnomalyClustering(n_clusters=2, temperature=temperature)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="linkage"):
        AnomalyClustering(n_clusters=2, linkage="centroid")
    with pytest.raises(ValueError, match="n_clusters"):
        AnomalyClustering(n_clusters=0)
