"""NMI: our contingency-table formula against scikit-learn, and the faiss k-means behind evaluate()."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score

from diva_ext.evaluation import evaluate, kmeans_assignments, nmi_score
from tolerances import gamma

labelings = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.lists(st.integers(-3, 6), min_size=n, max_size=n),
                        st.lists(st.integers(0, 9), min_size=n, max_size=n))
)


def nmi_rounding_bound(true, pred) -> float:
    """|ours - sklearn| for one pair of labelings, from float64 rounding of both formulas.

    Each computes I(T; P) from at most n_terms = cells + classes + clusters terms (ours: x log x
    per cell, class and cluster; sklearn: per cell), each a frequency x times at most 5 logs of
    counts or of N (within 1 ulp each), about 16 roundings in all, every intermediate value at most
    x * 4 log N in magnitude; the frequencies of each of the at most 3 groups of terms sum to 1.
    So |delta I| <= gamma(n_terms + 16) * 12 log N, and the entropy H = H(T) + H(P) (2 groups of
    x log x) moves by <= gamma(classes + clusters + 16) * 2 log N. NMI = I / (H / 2) then moves
    by |delta I| / (H / 2) + NMI |delta H| / H (first order), for each implementation."""
    true, pred = np.asarray(true), np.asarray(pred)
    n = len(true)
    classes, clusters = len(np.unique(true)), len(np.unique(pred))
    if classes <= 1 and clusters <= 1:  # NMI 1 by convention in both: exact
        return 0.0
    cells = len(set(zip(true.tolist(), pred.tolist())))
    log_n = max(math.log(n), 1.0)
    d_mi = gamma(cells + classes + clusters + 16, torch.float64) * 12 * log_n
    d_h = gamma(classes + clusters + 16, torch.float64) * 2 * log_n
    pt = np.unique(true, return_counts=True)[1] / n
    pp = np.unique(pred, return_counts=True)[1] / n
    h = float(-(pt * np.log(pt)).sum() - (pp * np.log(pp)).sum())
    return 2 * (d_mi / (h / 2) + normalized_mutual_info_score(true, pred) * d_h / h)


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_nmi_score_matches_sklearn(pair):
    true, pred = pair
    assert nmi_score(np.array(true), np.array(pred)) == pytest.approx(
        normalized_mutual_info_score(true, pred), rel=0, abs=nmi_rounding_bound(true, pred)
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
    assert out["nmi"] == pytest.approx(normalized_mutual_info_score(labels, assignment), rel=0,
                                       abs=nmi_rounding_bound(labels, assignment))
    assert 0.2 < out["nmi"] < 1.0


def test_kmeans_is_seeded_and_separates_blobs():
    x, labels = _blobs(20, 3, 4, spread=0.05, seed=1)
    first = kmeans_assignments(x, 3, seed=11)
    np.testing.assert_array_equal(first, kmeans_assignments(x, 3, seed=11))
    assert evaluate(x, labels, map_at_r=False, kmeans_seed=11)["nmi"] > 0.7


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans_assignments(np.zeros((3, 2), np.float32), 4)
