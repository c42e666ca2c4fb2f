"""recall@k and MAP@R: hand-made cases with known answers, and pytorch-metric-learning as oracle."""

import numpy as np
import pytest
import torch

from diva_ext.evaluation import evaluate
from diva_ext.evaluation.knn import _drop_self

from tolerances import gamma


def _line(xs):
    """1-D points as [N, 1] float32 embeddings."""
    return np.asarray(xs, dtype=np.float32)[:, None]


def _retrieval(x, labels, recall_at=(1, 2, 4)):
    return evaluate(x, labels, recall_at, nmi=False)


def test_hand_made_recall_and_map_at_r():
    # Worked out by hand (see each query's sorted neighbours):
    # q0 x=0   l0 R=2: [1 l1, 2 l0, 3 l0, 4 l1]  AP = (0 + 1/2)/2 = 0.25
    # q1 x=1   l1 R=1: [0 l0, 2 l0, 3 l0, 4 l1]  AP = 0, first hit at rank 4
    # q2 x=3   l0 R=2: [3 l0, 1 l1, 0 l0, 4 l1]  AP = (1 + 0)/2 = 0.5
    # q3 x=4.5 l0 R=2: [2 l0, 1 l1, 0 l0, 4 l1]  AP = 0.5
    # q4 x=10  l1 R=1: [3 l0, 2 l0, 1 l1, 0 l0]  AP = 0, first hit at rank 3
    out = _retrieval(_line([0, 1, 3, 4.5, 10]), [0, 1, 0, 0, 1])
    assert out["recall@1"] == pytest.approx(2 / 5)
    assert out["recall@2"] == pytest.approx(3 / 5)
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["map@r"] == pytest.approx((0.25 + 0 + 0.5 + 0.5 + 0) / 5)


def test_exact_duplicate_with_another_index_is_a_neighbour():
    # Rows 0 and 1 coincide. Row 1's nearest other row is row 0 (label 1): a miss at 1, whatever
    # faiss's order among the two distance-0 rows. Dropping "rank 0" instead of row 1 itself would
    # drop row 0 and count row 1 as its own neighbour. Row 0 is alone in its class: not a query.
    out = _retrieval(_line([0, 0, 3, 3.2]), [1, 0, 0, 0], recall_at=(1, 2))
    assert out["recall@1"] == pytest.approx(2 / 3)
    assert out["recall@2"] == pytest.approx(1.0)


def test_duplicate_of_same_class_counts_as_hit():
    out = _retrieval(_line([0, 0, 5, 5]), [0, 0, 1, 1], recall_at=(1,))
    assert out["recall@1"] == 1.0
    assert out["map@r"] == 1.0


def test_drop_self_by_index_not_rank():
    found = np.array([[4, 7, 9], [7, 4, 9], [1, 2, 3]])
    kept = _drop_self(found, np.array([7, 7, 7]))
    # Row 2 does not contain the query (more duplicates than k): its last entry goes.
    np.testing.assert_array_equal(kept, [[4, 9], [4, 9], [1, 2]])


def test_tie_between_positive_and_negative():
    # Row 0 is equidistant (1.0) from row 1 (its class) and row 2 (another class): either order is
    # a correct kNN, so recall@1 is 1/2 or 1; recall@2 is 1 either way. R = 1 so MAP@R = recall@1.
    out = _retrieval(_line([0, -1, 1]), [0, 0, 1], recall_at=(1, 2))
    assert out["recall@1"] in (pytest.approx(0.5), pytest.approx(1.0))
    assert out["recall@2"] == 1.0
    assert out["map@r"] == pytest.approx(out["recall@1"])


def test_class_of_one_is_not_a_query():
    # Row 2's class has no other member: it cannot be answered and is left out of the averages.
    out = _retrieval(_line([0, 0.1, 5]), [0, 0, 1], recall_at=(1,))
    assert out == {"recall@1": 1.0, "map@r": 1.0}


def test_k_beyond_n_means_all_other_rows():
    out = _retrieval(_line([0, 1, 3, 4.5, 10]), [0, 1, 0, 0, 1], recall_at=(4, 100))
    assert out["recall@100"] == out["recall@4"] == 1.0


@pytest.mark.parametrize("n, dim, classes, chunk", [(301, 17, 37, None), (97, 5, 11, 7), (50, 3, 2, 1)])
def test_matches_pytorch_metric_learning(n, dim, classes, chunk):
    accuracy = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    pytest.importorskip("faiss", reason="faiss not installed: pytorch-metric-learning's default kNN is faiss's "
                        "(test_evaluation_backends.py compares the torch backend with its torch kNN)")
    rng = np.random.default_rng(n)
    labels = rng.integers(0, classes, n)
    # Class-dependent means so scores are far from 0 and from 1.
    x = (rng.standard_normal((classes, dim))[labels] + 1.5 * rng.standard_normal((n, dim))).astype(np.float32)
    ours = evaluate(x, labels, (1,), nmi=False, chunk_size=chunk)
    theirs = accuracy.AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r")).get_accuracy(
        torch.from_numpy(x), torch.from_numpy(labels)
    )
    assert 0.05 < ours["recall@1"] < 0.95
    # Both are float64 means of n per-query values in [0, 1] (AP@R itself a sum of R < n terms),
    # summed in any order: each within gamma_n + gamma_{n+3} of the exact mean.
    tol = 2 * (gamma(n, torch.float64) + gamma(n + 3, torch.float64))
    assert abs(ours["recall@1"] - theirs["precision_at_1"]) <= tol
    assert abs(ours["map@r"] - theirs["mean_average_precision_at_r"]) <= tol


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((123, 9)).astype(np.float32)
    labels = rng.integers(0, 13, 123)
    whole = evaluate(x, labels, (1, 3, 8), nmi=False)
    assert evaluate(x, labels, (1, 3, 8), nmi=False, chunk_size=10) == whole
    assert evaluate(torch.from_numpy(x).double(), torch.from_numpy(labels), (1, 3, 8), nmi=False) == whole


def test_keys_and_ranges():
    rng = np.random.default_rng(2)
    out = evaluate(rng.standard_normal((60, 4)), rng.integers(0, 6, 60))
    assert set(out) == {"recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r"}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    assert out["recall@1"] <= out["recall@2"] <= out["recall@4"] <= out["recall@8"]


def test_progress_bar_shows_when_asked(capsys):
    rng = np.random.default_rng(3)
    evaluate(rng.standard_normal((40, 4)), rng.integers(0, 4, 40), nmi=False, chunk_size=8, progress=True)
    assert "kNN search" in capsys.readouterr().err
    evaluate(rng.standard_normal((40, 4)), rng.integers(0, 4, 40), nmi=False, chunk_size=8, progress=False)
    assert "kNN search" not in capsys.readouterr().err
