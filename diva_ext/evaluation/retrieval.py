"""Recall@k and MAP@R from the labels of each query's nearest neighbours.

Both are accumulated chunk by chunk (see knn.iter_neighbours) so that N x k never has to exist.
"""

from typing import Dict, Sequence

import numpy as np


class RetrievalAccumulator:
    """Sums per-query recall@k hits and average precisions at R over neighbour chunks.

    Queries whose class has no other sample ("lone" queries) have no correct answer, so they are
    left out of every average, as in pytorch-metric-learning's AccuracyCalculator.

    Args:
        labels: int64 [N] class of every row.
        recall_at: the k of recall@k (each <= the neighbour count the chunks will have).
        map_at_r: also accumulate MAP@R; the chunks then need max class size - 1 neighbours.
    """

    def __init__(self, labels: np.ndarray, recall_at: Sequence[int], map_at_r: bool):
        self.labels = labels
        self.recall_at = tuple(recall_at)
        self.map_at_r = map_at_r
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        # R of each query: how many *other* rows share its class.
        self.relevant = (counts - 1)[inverse]
        self.num_queries = int((self.relevant > 0).sum())
        self.hits = np.zeros(len(self.recall_at), dtype=np.int64)
        self.ap_sum = 0.0

    def add(self, start: int, neighbour_ids: np.ndarray) -> None:
        """Accumulate rows ``start .. start + len(neighbour_ids)`` (int64 [chunk, k] ids)."""
        stop = start + neighbour_ids.shape[0]
        relevant = self.relevant[start:stop]
        keep = relevant > 0
        match = self.labels[neighbour_ids[keep]] == self.labels[start:stop][keep, None]
        for i, k in enumerate(self.recall_at):
            self.hits[i] += int(match[:, :k].any(axis=1).sum())
        if self.map_at_r:
            self.ap_sum += float(_average_precision_at_r(match, relevant[keep]).sum())

    def result(self) -> Dict[str, float]:
        """``{"recall@k": ..., "map@r": ...}`` as fractions in [0, 1]."""
        out = {f"recall@{k}": float(h) / self.num_queries for k, h in zip(self.recall_at, self.hits)}
        if self.map_at_r:
            out["map@r"] = self.ap_sum / self.num_queries
        return out


def _average_precision_at_r(match: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Musgrave et al. (2020): ``AP@R = (1/R) sum_{i<=R} P(i) rel(i)`` per query.

    Args:
        match: bool [q, k], k >= max(relevant): neighbour i has the query's class.
        relevant: int [q] R per query, all >= 1.
    """
    ranks = np.arange(1, match.shape[1] + 1)
    within_r = ranks[None, :] <= relevant[:, None]
    hits = match & within_r
    precision = np.cumsum(hits, axis=1) / ranks[None, :]
    return (precision * hits).sum(axis=1) / relevant
