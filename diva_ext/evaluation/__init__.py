"""Retrieval and clustering metrics for zero-shot metric learning, on faiss.

``evaluate(embeddings, labels)`` returns recall@k, NMI and MAP@R (fractions in [0, 1]);
``combine_embeddings(heads, weights)`` builds DiVA's test embedding from its heads.
faiss runs on the GPU when it can see one and the embeddings are on a CUDA device, else on CPU.
"""

from typing import Dict, Optional, Sequence

import numpy as np

from diva_ext.evaluation._inputs import (
    ArrayLike, check_flag, check_int, embeddings_to_tensor, labels_to_tensor, positive_ints,
)
from diva_ext.evaluation.clustering import kmeans_assignments, nmi_score
from diva_ext.evaluation.combine import combine_embeddings
from diva_ext.evaluation.knn import gpu_available, iter_neighbours
from diva_ext.evaluation.retrieval import RetrievalAccumulator

__all__ = ["evaluate", "combine_embeddings", "nmi_score", "kmeans_assignments"]


def evaluate(
    embeddings: ArrayLike,
    labels: ArrayLike,
    recall_at: Sequence[int] = (1, 2, 4, 8),
    *,
    nmi: bool = True,
    map_at_r: bool = True,
    kmeans_seed: int = 0,
    kmeans_iters: int = 20,
    use_gpu: Optional[bool] = None,
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Dict[str, float]:
    """Zero-shot retrieval metrics of ``embeddings`` against themselves.

    Every row is a query against all the other rows (exact L2 kNN, faiss ``IndexFlatL2``; for unit
    rows the same order as cosine similarity). A query is excluded from its own neighbours by its
    index, not by rank: an exact duplicate with another index is a neighbour like any other.
    Queries whose class has no other row cannot be answered correctly and are left out of
    recall@k and MAP@R (they still count for NMI); at least one class needs two rows.

    Args:
        embeddings: [N, D] float tensor or array (any float dtype; computed in float32), N >= 2.
        labels: [N] integer class ids (any values).
        recall_at: the k of recall@k; k >= N - 1 means "among all other rows".
        nmi: compute ``nmi``: faiss k-means with k = number of distinct labels, seeded by
            ``kmeans_seed``, ``kmeans_iters`` iterations, NMI with arithmetic normalisation.
        map_at_r: compute ``map@r`` (Musgrave et al. 2020, "A Metric Learning Reality Check"),
            which searches max(class size) - 1 neighbours per query.
        use_gpu: faiss GPU indexes; ``None``: when faiss sees a GPU and embeddings are on CUDA.
        chunk_size: queries per kNN search call (default bounds each chunk's [chunk, k] result to
            4M entries: 60k x 512 SOP-sized embeddings with recall_at up to 1000 add ~260 MB at peak,
            the faiss index included, and take ~2.5 min on 2 CPU cores without NMI).
        progress: tqdm bars for the kNN chunks and k-means iterations; ``None``: on a terminal.

    Returns:
        ``{"recall@k": ... for k in recall_at, "nmi": ..., "map@r": ...}``, Python floats in [0, 1].
    """
    nmi = check_flag(nmi, "nmi")
    map_at_r = check_flag(map_at_r, "map_at_r")
    kmeans_seed = check_int(kmeans_seed, "kmeans_seed", 0, 2**31)
    kmeans_iters = check_int(kmeans_iters, "kmeans_iters", 1)
    use_gpu = check_flag(use_gpu, "use_gpu", optional=True)
    chunk_size = check_int(chunk_size, "chunk_size", 1, optional=True)
    progress = check_flag(progress, "progress", optional=True)
    tensor = embeddings_to_tensor(embeddings)
    on_cuda = tensor.is_cuda
    x = tensor.cpu().numpy()
    y = labels_to_tensor(labels, x.shape[0]).numpy()
    ks = positive_ints(recall_at, "recall_at")
    if use_gpu is None:
        use_gpu = on_cuda and gpu_available()
    elif use_gpu and not gpu_available():
        raise ValueError("use_gpu=True but this faiss build sees no GPU")

    n = x.shape[0]
    classes, counts = np.unique(y, return_counts=True)
    if counts.max() < 2:
        raise ValueError("every label occurs once in labels; recall and MAP@R need a class with two rows")
    k = min(n - 1, max(max(ks), int(counts.max()) - 1 if map_at_r else 0))
    accumulator = RetrievalAccumulator(y, [min(k_, n - 1) for k_ in ks], map_at_r)
    for start, neighbour_ids in iter_neighbours(x, k, use_gpu=use_gpu, chunk_size=chunk_size, progress=progress):
        accumulator.add(start, neighbour_ids)
    metrics = accumulator.result()
    # Name the keys by the k asked for, even where it was capped at N - 1.
    metrics = {**{f"recall@{k_}": metrics[f"recall@{min(k_, n - 1)}"] for k_ in ks},
               **({"map@r": metrics["map@r"]} if map_at_r else {})}
    if nmi:
        assignment = kmeans_assignments(
            x, len(classes), niter=kmeans_iters, seed=kmeans_seed, use_gpu=use_gpu, progress=progress
        )
        metrics["nmi"] = nmi_score(y, assignment)
    return metrics
