"""NMI: our contingency-table formula against scikit-learn, and the faiss k-means behind evaluate()."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score

from diva_ext.evaluation import evaluate, kmeans_assignments, nmi_score

labelings = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.lists(st.integers(-3, 6), min_size=n, max_size=n),
                        st.lists(st.integers(0, 9), min_size=n, max_size=n))
)


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_nmi_score_matches_sklearn(pair):
    true, pred = pair
    assert nmi_score(np.array(true), np.array(pred)) == pytest.approx(
        normalized_mutual_info_score(true, pred), abs=1e-12
    )


@pytest.mark.parametrize(
    "true, pred, expected",
    [([0, 0, 1, 1], [5, 5, 2, 2], 1.0), ([0, 0, 0, 0], [0, 1, 2, 3], 0.0), ([3, 3, 3], [1, 1, 1], 1.0)],
)
def test_nmi_score_known_values(true, pred, expected):
    assert nmi_score(np.array(true), np.array(pred)) == expected


def test_nmi_score_shape_mismatch():
    with pytest.raises(ValueError, match="equal length"):
        nmi_score(np.zeros(3, int), np.zeros(4, int))


def _blobs(n_per_class, classes, dim, spread, seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = 4.0 * rng.standard_normal((classes, dim))
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    return x.astype(np.float32), labels


def test_evaluate_nmi_is_sklearn_nmi_of_the_same_kmeans():
    x, labels = _blobs(13, 7, 5, spread=2.5, seed=0)
    out = evaluate(x, labels, nmi=True, map_at_r=False, kmeans_seed=3)
    assignment = kmeans_assignments(x, 7, seed=3)
    assert set(np.unique(assignment)) <= set(range(7))
    assert out["nmi"] == pytest.approx(normalized_mutual_info_score(labels, assignment), abs=1e-12)
    assert 0.2 < out["nmi"] < 1.0


def test_kmeans_is_seeded_and_separates_blobs():
    x, labels = _blobs(20, 3, 4, spread=0.05, seed=1)
    first = kmeans_assignments(x, 3, seed=11)
    np.testing.assert_array_equal(first, kmeans_assignments(x, 3, seed=11))
    assert evaluate(x, labels, map_at_r=False, kmeans_seed=11)["nmi"] > 0.7


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans_assignments(np.zeros((3, 2), np.float32), 4)
