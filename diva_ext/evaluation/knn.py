"""Exact k-nearest-neighbour search with faiss, chunked over queries, the query itself excluded.

The whole database sits in one flat (exact, L2) index; queries go through in chunks so that the
[chunk, k] result and whatever the caller computes from it stay small whatever N and k are.
The torch twin is knn_torch.py; faiss is imported on first use (backend.import_faiss).
"""

from typing import Iterator, Optional, Tuple

import numpy as np
from tqdm.auto import tqdm

from diva_ext.evaluation._progress import tqdm_disable
from diva_ext.evaluation.backend import faiss_gpu_available, import_faiss

# faiss's GPU k-selection handles at most this many neighbours per query.
_GPU_MAX_K = 2048
# Entries of the [chunk, k] neighbour matrix per chunk when the caller sets none: with faiss's
# distances and the metric temporaries, about 100 bytes each at peak (~400 MiB).
_CHUNK_ENTRIES = 1 << 22


def gpu_available() -> bool:
    """True when faiss is installed and its build can see at least one GPU."""
    return faiss_gpu_available()


def _flat_index(dim: int, use_gpu: bool):
    faiss = import_faiss()
    if use_gpu:
        return faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), dim)
    return faiss.IndexFlatL2(dim)


def _drop_self(found: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """[q, k+1] neighbour ids -> [q, k] without each query's own id.

    NB: by index, not by rank. With exact duplicates, the query need not come first among its
    distance-0 neighbours, and a duplicate with another index is a genuine neighbour. When the
    query is not among the k+1 found at all (more than k exact duplicates), the k+1 are all other
    rows and the first k of them are the k nearest: the last one is dropped.
    """
    drop = found == query_ids[:, None]
    missing = ~drop.any(axis=1)
    drop[missing, -1] = True
    return found[~drop].reshape(found.shape[0], found.shape[1] - 1)


def iter_neighbours(
    x: np.ndarray,
    k: int,
    *,
    use_gpu: bool = False,
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(start, ids)`` chunks: ``ids[i]`` are the k nearest rows to row ``start + i``.

    Args:
        x: [N, D] float32 C-contiguous database, also the queries.
        k: neighbours per query, 1 <= k <= N - 1.
        use_gpu: search on faiss's GPU index (falls back to CPU when k exceeds faiss's GPU limit).
        chunk_size: queries per faiss call; default keeps [chunk, k] at about 4M entries.
        progress: tqdm bar; ``None`` shows it only on a terminal and when there are several chunks.

    Yields:
        ``(start, ids)`` with ids an int64 [chunk, k] array, nearest first by L2 distance; rows
        other than the query at equal distance keep faiss's order (CPU: lower index first).
    """
    n, dim = x.shape
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    if chunk_size is None:
        chunk_size = max(1, min(n, _CHUNK_ENTRIES // (k + 1)))
    try:
        index = _flat_index(dim, use_gpu and k + 1 <= _GPU_MAX_K)
        index.add(x)
    except RuntimeError as err:  # faiss's C++ exceptions arrive as RuntimeError
        raise RuntimeError(f"faiss could not build the kNN index of {n} x {dim} embeddings: {err}") from err
    starts = range(0, n, chunk_size)
    bar = tqdm(starts, desc="kNN search", unit="chunk", leave=False, disable=tqdm_disable(progress, len(starts)))
    for start in bar:
        stop = min(start + chunk_size, n)
        try:
            _, found = index.search(x[start:stop], k + 1)
        except RuntimeError as err:
            raise RuntimeError(f"faiss kNN search failed (rows {start}..{stop - 1}, k={k}): {err}") from err
        yield start, _drop_self(found, np.arange(start, stop))
