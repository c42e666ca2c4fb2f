"""Retrieval and clustering metrics for zero-shot metric learning, in torch or with faiss.

``evaluate(embeddings, labels)`` returns recall@k, NMI and MAP@R (fractions in [0, 1]);
``combine_embeddings(heads, weights)`` builds DiVA's test embedding from its heads.
faiss is optional: ``backend="torch"`` (the default when faiss is missing) does the same exact
kNN and k-means in chunked torch on the embeddings' device.
"""

from typing import Dict, Optional, Sequence

import torch

from diva_ext.evaluation import knn, knn_torch
from diva_ext.evaluation._inputs import (
    ArrayLike, check_flag, check_int, embeddings_to_tensor, labels_to_tensor, positive_ints,
)
from diva_ext.evaluation.backend import BACKENDS, faiss_available, resolve_backend
from diva_ext.evaluation.clustering import SEED_LIMIT, cluster, kmeans_assignments, nmi_score
from diva_ext.evaluation.combine import combine_embeddings
from diva_ext.evaluation.retrieval import RetrievalAccumulator

__all__ = ["evaluate", "combine_embeddings", "nmi_score", "kmeans_assignments", "BACKENDS", "faiss_available"]


def evaluate(
    embeddings: ArrayLike,
    labels: ArrayLike,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    *,
    nmi: bool = True,
    map_at_r: bool = True,
    kmeans_seed: int = 0,
    kmeans_iters: int = 20,
    backend: str = "auto",
    use_gpu: Optional[bool] = None,
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Zero-shot retrieval metrics of ``embeddings`` against themselves.

    Every row is a query against all the other rows (exact L2 kNN; for unit rows the same order
    as cosine similarity). A query is excluded from its own neighbours by its index, not by rank
    or by distance 0: an exact duplicate with another index is a neighbour like any other.
    Queries whose class has no other row cannot be answered correctly and are left out of
    recall@k and MAP@R (they still count for NMI); at least one class needs two rows.
    The metrics do not depend on the embeddings' scale: they are rescaled by a power of two
    (exact) so that the largest magnitude is in [0.5, 1) before the float32 arithmetic.

    Args:
        embeddings: [N, D] finite float tensor or array (any float dtype; computed in float32),
            N >= 2. The torch backend runs on the tensor's device.
        labels: [N] integer class ids (any values).
        recall_at: the k of recall@k; k >= N - 1 means "among all other rows".
        nmi: compute ``nmi``: k-means with k = number of distinct labels (seeded k-means++ centres,
            ``kmeans_iters`` Lloyd iterations), NMI with arithmetic normalisation.
        map_at_r: compute ``map@r`` (Musgrave et al. 2020, "A Metric Learning Reality Check"),
            which searches max(class size) - 1 neighbours per query.
        kmeans_seed: seed of the k-means++ draws (and of faiss's), in [0, 2**31).
        kmeans_iters: Lloyd iterations, >= 1.
        backend: ``"torch"``: exact chunked kNN (GEMM + topk) and k-means in torch, on the
            embeddings' device; ``"faiss"``: faiss's flat index and Lloyd steps (faiss must be
            installed); ``"auto"``: faiss when it imports, except for CUDA embeddings with a faiss
            that sees no GPU (then torch on that GPU); torch without faiss. On data without
            distance ties both give the same recall@k and MAP@R; NMI agrees on clear clusters
            (same k-means++ start, only the Lloyd arithmetic differs).
        use_gpu: faiss GPU indexes (faiss backend only); ``None``: when faiss sees a GPU and the
            embeddings are on CUDA.
        chunk_size: queries per kNN block. Default: torch keeps each [chunk, N] score block within
            256 MiB at peak (60k x 512 SOP-sized embeddings: ~280 queries per block); faiss keeps
            each [chunk, k] result at about 4M entries.
        progress: tqdm bars for the kNN chunks and k-means; ``None``: on a terminal.

    Returns:
        ``{"recall@k": ... for k in recall_at, "nmi": ..., "map@r": ...}``, Python floats in [0, 1].
    """
    nmi = check_flag(nmi, "nmi")
    map_at_r = check_flag(map_at_r, "map_at_r")
    kmeans_seed = check_int(kmeans_seed, "kmeans_seed", 0, SEED_LIMIT)
    kmeans_iters = check_int(kmeans_iters, "kmeans_iters", 1)
    use_gpu = check_flag(use_gpu, "use_gpu", optional=True)
    chunk_size = check_int(chunk_size, "chunk_size", 1, optional=True)
    progress = check_flag(progress, "progress", optional=True)
    x = embeddings_to_tensor(embeddings)
    y = labels_to_tensor(labels, x.shape[0])
    ks = positive_ints(recall_at, "recall_at")
    backend, use_gpu = resolve_backend(backend, x.device, use_gpu)

    n = x.shape[0]
    counts = torch.unique(y, return_counts=True)[1]
    largest_class = int(counts.max())
    if largest_class < 2:
        raise ValueError("every label occurs once in labels; recall and MAP@R need a class with two rows")
    k = min(n - 1, max(max(ks), largest_class - 1 if map_at_r else 0))
    recall_k = [min(k_, n - 1) for k_ in ks]
    if backend == "torch":
        accumulator = RetrievalAccumulator(y.to(x.device), recall_k, map_at_r)
        for start, ids in knn_torch.iter_neighbours(x, k, chunk_size=chunk_size, progress=progress):
            accumulator.add(start, ids)
    else:
        accumulator = RetrievalAccumulator(y, recall_k, map_at_r)
        chunks = knn.iter_neighbours(x.cpu().numpy(), k, use_gpu=use_gpu, chunk_size=chunk_size, progress=progress)
        for start, ids in chunks:
            accumulator.add(start, torch.from_numpy(ids))
    metrics = accumulator.result()
    # Name the keys by the k asked for, even where it was capped at N - 1.
    metrics = {**{f"recall@{k_}": metrics[f"recall@{min(k_, n - 1)}"] for k_ in ks},
               **({"map@r": metrics["map@r"]} if map_at_r else {})}
    if nmi:
        assignment = cluster(x, len(counts), niter=kmeans_iters, seed=kmeans_seed, backend=backend,
                             use_gpu=use_gpu, progress=progress)
        metrics["nmi"] = nmi_score(y.numpy(), assignment)
    return metrics
