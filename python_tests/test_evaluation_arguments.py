"""evaluate()'s options are checked up front (errors name the argument), and a failure inside faiss
comes back as a Python error that says it was faiss and what it was doing."""

import numpy as np
import pytest

from diva_ext.evaluation import evaluate

X = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
Y = np.arange(50) % 5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        # Each of these was accepted, or failed with a message that did not name the argument.
        ({"chunk_size": 0}, ValueError, r"chunk_size must be >= 1, got 0"),
        ({"chunk_size": -1}, ValueError, r"chunk_size must be >= 1, got -1"),  # was: all recalls 0.0
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int"),
        ({"chunk_size": True}, TypeError, "chunk_size must be an int"),
        ({"kmeans_iters": 0}, ValueError, "kmeans_iters must be >= 1"),  # was: "niter must be >= 1"
        ({"kmeans_iters": 2.5}, TypeError, "kmeans_iters must be an int"),
        ({"kmeans_seed": -1}, ValueError, r"kmeans_seed must be in \[0, 2147483648\)"),
        ({"kmeans_seed": 2**40}, ValueError, "kmeans_seed must be in"),  # was: SWIG OverflowError
        ({"kmeans_seed": 1.5}, TypeError, "kmeans_seed must be an int"),
        ({"nmi": "no"}, TypeError, "nmi must be True or False"),  # was: NMI computed ("no" is truthy)
        ({"map_at_r": None}, TypeError, "map_at_r must be True or False"),
        ({"progress": "yes"}, TypeError, "progress must be True, False or None"),
        ({"use_gpu": "no"}, TypeError, "use_gpu must be True, False or None"),
    ],
)
def test_bad_option(kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate(X, Y, **kwargs)


def test_ragged_labels():
    with pytest.raises(TypeError, match="labels must be a tensor, array or sequence of integer class ids"):
        evaluate(X[:2], [[0, 1], [1]])


def test_float64_beyond_float32_range_is_not_called_infinite():
    # 1e39 is finite in float64; it used to be cast to float32 (inf) and then rejected as infinite.
    out = evaluate(X.astype(np.float64) * 1e39, Y, nmi=False)
    assert out == evaluate(X.astype(np.float64) * 1e39 * 2.0**-130, Y, nmi=False)


class _Failing:
    """Stands in for a faiss class whose C++ side throws (faiss's SWIG layer raises RuntimeError)."""

    def __init__(self, *args, **kwargs):
        self.centroids = None

    def _fail(self, *args, **kwargs):
        raise RuntimeError("Error in faiss::something at Foo.cpp:1: boom")

    add = search = train = _fail


def test_faiss_kmeans_failure_is_named(monkeypatch):
    faiss = pytest.importorskip("faiss", reason="faiss not installed: its error path cannot be exercised")
    monkeypatch.setattr(faiss, "Kmeans", _Failing)
    with pytest.raises(RuntimeError, match=r"faiss k-means failed \(N=50, D=4, k=5\): .*boom"):
        evaluate(X, Y, backend="faiss")


def test_faiss_search_failure_is_named(monkeypatch):
    faiss = pytest.importorskip("faiss", reason="faiss not installed: its error path cannot be exercised")
    monkeypatch.setattr(faiss, "IndexFlatL2", _Failing)
    with pytest.raises(RuntimeError, match=r"faiss could not build the kNN index of 50 x 4 embeddings: .*boom"):
        evaluate(X, Y, nmi=False, backend="faiss")
