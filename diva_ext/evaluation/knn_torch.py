"""Exact k-nearest-neighbour search in torch, chunked over queries, the query excluded by index.

The faiss twin is knn.py. Each chunk of queries q forms its [chunk, N] block of scores
``|x_j|^2 - 2 <q, x_j>`` with one GEMM (the squared distance less ``|q|^2``, which is the same
along a row and cannot change the order), sets each query's own column to +inf, and keeps
torch.topk's k smallest. That block is the only memory that grows with N per query, so the chunk
comes from a memory budget; everything runs on the embeddings' device.
"""

import contextlib
from typing import Iterator, Optional, Tuple

import torch
from tqdm.auto import tqdm

from diva_ext.evaluation._progress import tqdm_disable

# Memory the [chunk, N] score block may take, and its bytes per entry at peak: the float32 scores
# plus topk's workspace (a sort of float32 values and int64 indices where k is large on CUDA).
BLOCK_BYTES = 256 << 20
_BYTES_PER_ENTRY = 16


def default_chunk_size(n: int, budget: int = BLOCK_BYTES) -> int:
    """Queries per chunk so that a [chunk, n] score block stays within ``budget`` bytes."""
    return max(1, min(n, budget // (_BYTES_PER_ENTRY * n)))


@contextlib.contextmanager
def full_float32_matmul():
    """float32 GEMMs at full precision inside, whatever the caller chose for training: TF32 (10
    mantissa bits) would perturb distances by ~1e-3 relative and reorder near neighbours."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def squared_norms(x: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
    """float32 [N] |x_i|^2, a chunk of rows at a time (no [N, D] temporary)."""
    return torch.cat([chunk.pow(2).sum(1) for chunk in x.split(rows)])


def iter_neighbours(
    x: torch.Tensor,
    k: int,
    *,
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield ``(start, ids)`` chunks: ``ids[i]`` are the k nearest other rows to row ``start + i``.

    Args:
        x: [N, D] float32 contiguous tensor (database and queries), any device.
        k: neighbours per query, 1 <= k <= N - 1.
        chunk_size: queries per block; default: a [chunk, N] block of at most BLOCK_BYTES at peak.
        progress: tqdm bar; ``None`` shows it only on a terminal and when there are several chunks.

    Yields:
        ``(start, ids)``: ids int64 [chunk, k] on x's device, nearest first by L2 distance. The
        query is never among its own neighbours (excluded by index, so an exact duplicate with
        another index is a neighbour at distance 0); other rows at equal computed distance come
        in torch.topk's order.
    """
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    chunk_size = chunk_size or default_chunk_size(n)
    norms = squared_norms(x)
    starts = range(0, n, chunk_size)
    bar = tqdm(starts, desc="kNN search", unit="chunk", leave=False, disable=tqdm_disable(progress, len(starts)))
    for start in bar:
        queries = x[start : start + chunk_size]
        with full_float32_matmul():
            scores = torch.addmm(norms.unsqueeze(0), queries, x.t(), alpha=-2.0)
        # Entry (i, start + i) is query i against itself.
        scores.diagonal(offset=start).fill_(float("inf"))
        yield start, scores.topk(k, dim=1, largest=False, sorted=True).indices
        del scores
