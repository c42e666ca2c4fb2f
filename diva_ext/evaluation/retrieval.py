"""Recall@k and MAP@R from the labels of each query's nearest neighbours.

Both are accumulated chunk by chunk (see knn.iter_neighbours, knn_torch.iter_neighbours) so that
N x k never has to exist, on the device the neighbour ids live on, without a sync per chunk.
"""

from typing import Dict, Sequence

import torch


class RetrievalAccumulator:
    """Sums per-query recall@k hits and average precisions at R over neighbour chunks.

    Queries whose class has no other sample ("lone" queries) have no correct answer, so they are
    left out of every average, as in pytorch-metric-learning's AccuracyCalculator.

    Args:
        labels: int64 [N] class of every row, on the device the chunks' ids will be on.
        recall_at: the k of recall@k (each <= the neighbour count the chunks will have).
        map_at_r: also accumulate MAP@R; the chunks then need max class size - 1 neighbours.
    """

    def __init__(self, labels: torch.Tensor, recall_at: Sequence[int], map_at_r: bool):
        self.labels = labels
        self.recall_at = tuple(recall_at)
        self.map_at_r = map_at_r
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        # R of each query: how many *other* rows share its class.
        self.relevant = (counts - 1)[inverse]
        self.num_queries = int((self.relevant > 0).sum())
        self.max_relevant = int(self.relevant.max())
        self.hits = torch.zeros(len(self.recall_at), dtype=torch.int64, device=labels.device)
        self.ap_sum = torch.zeros((), dtype=torch.float64, device=labels.device)

    def add(self, start: int, neighbour_ids: torch.Tensor) -> None:
        """Accumulate rows ``start .. start + len(neighbour_ids)`` (int64 [chunk, k] ids)."""
        stop = start + neighbour_ids.shape[0]
        relevant = self.relevant[start:stop]
        answerable = relevant > 0
        match = self.labels[neighbour_ids] == self.labels[start:stop, None]
        for i, k in enumerate(self.recall_at):
            self.hits[i] += (match[:, :k].any(dim=1) & answerable).sum()
        if self.map_at_r:
            ap = _average_precision_at_r(match[:, : self.max_relevant], relevant)
            self.ap_sum += torch.where(answerable, ap, 0.0).sum()

    def result(self) -> Dict[str, float]:
        """``{"recall@k": ..., "map@r": ...}`` as fractions in [0, 1]."""
        hits = self.hits.tolist()
        out = {f"recall@{k}": float(h) / self.num_queries for k, h in zip(self.recall_at, hits)}
        if self.map_at_r:
            out["map@r"] = float(self.ap_sum) / self.num_queries
        return out


def _average_precision_at_r(match: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Musgrave et al. (2020): ``AP@R = (1/R) sum_{i<=R} P(i) rel(i)`` per query (float64).

    Args:
        match: bool [q, r], r >= max(relevant): neighbour i has the query's class.
        relevant: int [q] R per query (0 for lone queries: their AP is 0 and not counted).
    """
    ranks = torch.arange(1, match.shape[1] + 1, device=match.device, dtype=torch.float64)
    hits = match & (ranks.unsqueeze(0) <= relevant.unsqueeze(1))
    precision = hits.cumsum(dim=1, dtype=torch.float64) / ranks
    return (precision * hits).sum(dim=1) / relevant.clamp(min=1)
