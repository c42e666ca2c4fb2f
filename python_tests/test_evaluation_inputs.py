"""evaluate() rejects bad input with an error that names the argument."""

import numpy as np
import pytest
import torch

from diva_ext.evaluation import evaluate
from diva_ext.evaluation.knn import gpu_available

from pairwise_distance_error_model import distance_error_bound

X = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
Y = np.arange(10) % 3


@pytest.mark.parametrize(
    "embeddings, labels, kwargs, error, match",
    [
        (X[0], Y, {}, ValueError, r"embeddings must have shape \[N, D\]"),
        (X[:1], Y[:1], {}, ValueError, "at least 2 rows"),
        (X.astype(np.int32), Y, {}, ValueError, "embeddings must be a floating-point"),
        ([[0.0], [1.0]], [0, 0], {}, TypeError, "embeddings must be a torch.Tensor or numpy.ndarray"),
        (np.where(np.arange(30).reshape(10, 3) == 4, np.nan, X), Y, {}, ValueError, "embeddings contains NaN"),
        (X, Y[:9], {}, ValueError, "labels has 9 entries but embeddings has 10 rows"),
        (X, Y.astype(np.float32), {}, ValueError, "labels must be integer class ids"),
        (X, torch.from_numpy(Y).float(), {}, ValueError, "labels must be integer class ids"),
        (X, Y[None, :], {}, ValueError, r"labels must have shape \[N\], got shape \(1, 10\)"),
        (X, np.arange(10), {}, ValueError, "every label occurs once"),
        (X, Y, {"recall_at": ()}, ValueError, "recall_at"),
        (X, Y, {"recall_at": (0, 1)}, ValueError, "recall_at"),
        (X, Y, {"recall_at": (1.5,)}, ValueError, "recall_at"),
        (X, Y, {"recall_at": 4}, TypeError, "recall_at"),
    ],
)
def test_bad_input(embeddings, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate(embeddings, labels, **kwargs)


@pytest.mark.skipif(gpu_available(), reason="faiss sees a GPU here")
def test_use_gpu_without_gpu():
    with pytest.raises(ValueError, match="use_gpu=True"):
        evaluate(X, Y, use_gpu=True)


@pytest.mark.skipif(not (gpu_available() and torch.cuda.is_available()), reason="needs faiss with a GPU")
def test_gpu_matches_cpu():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    y = rng.integers(0, 20, 500)
    cpu = evaluate(x, y, nmi=False)
    gpu = evaluate(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), nmi=False)
    allowed = near_tie_fraction(x, y, max_rank=8)
    for key in cpu:
        assert abs(gpu[key] - cpu[key]) <= allowed, (key, gpu[key], cpu[key], allowed)


def near_tie_fraction(x, y, max_rank):
    """The fraction of queries whose ranking may differ between two float32 kNN computations:
    those with two neighbours, among the first max(max_rank, R) + 1 (R = its class size - 1, for
    MAP@R), whose float64 squared distances are within the sum of their float32 rounding bounds
    (pairwise_distance_error_model's norm-expansion bound, as GEMM-based indexes compute them). Every
    metric is a mean over queries of a value in [0, 1], so only these queries can move it."""
    xt = torch.from_numpy(x).double()
    d2 = torch.cdist(xt, xt).square()
    bound = distance_error_bound(torch.from_numpy(x), torch.from_numpy(x), squared=True)
    d2.fill_diagonal_(float("inf"))
    counts = np.bincount(y)
    depth = min(max(max_rank, int(counts.max()) - 1) + 1, x.shape[0] - 1)
    order = d2.argsort(1)[:, :depth]
    dist, err = d2.gather(1, order), bound.gather(1, order)
    # Sorted: a pair can swap only if some adjacent pair can (the gaps between are all positive).
    swappable = (dist[:, 1:] - dist[:, :-1]) <= (err[:, 1:] + err[:, :-1])
    return float(swappable.any(1).double().mean())
