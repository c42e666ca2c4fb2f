"""Contrastive losses against a memory queue: MoCo's InfoNCE and DiVA's DaNCE.

Both wrap diva_ext.ops.info_nce (or, with ``ops="reference"``, the explicit-logits version in
diva_ext.reference, for comparison). The queue is usually a MemoryQueue's ``negatives()``; for
in-batch negatives pass the other view as the queue.
"""

import torch
from torch import nn

from diva_ext import _validation as _check
from diva_ext import ops as _fused
from diva_ext import reference as _reference
from diva_ext._info_nce_temperature import temperature_error
from diva_ext.losses._reduction import batch_mean

_REDUCTIONS = ("mean", "sum", "none")
_IMPLEMENTATIONS = {"fused": _fused, "reference": _reference}


class InfoNCELoss(nn.Module):
    """InfoNCE of queries against their keys and a queue of negatives (MoCo).

    Args:
        temperature: T of the logits ``<q, k> / T``, finite and > 0; forward refuses one below
            diva_ext.ops.info_nce's range for the inputs' dtype (float32: 2^-126, DaNCE 2^-30).
        reduction: "mean" (default), "sum" or "none" over the batch.
        ops: "fused" (diva_ext.ops) or "reference" (the explicit [B, K+1] logits).

    forward(query [B, D], key [B, D], queue [K, D]) -> the reduced loss (a [B] tensor for
    "none"). Floating tensors of one dtype and device, finite, rows L2-normalised by the caller;
    a wrong one is a ValueError naming it (one device synchronisation checks the values).
    Gradients flow to every input that requires them. An empty batch (B = 0) gives an exact 0
    for "mean" and "sum" (a [0] tensor for "none") that keeps the graph: backward gives zero
    gradients, like every loss in diva_ext.losses (pytorch-metric-learning's zero loss).
    """

    weighting = "none"

    def __init__(self, temperature: float = 0.07, *, reduction: str = "mean", ops: str = "fused"):
        super().__init__()
        temperature = _check.real(temperature, "temperature", minimum=0.0, strict=True)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if ops not in _IMPLEMENTATIONS:
            raise ValueError(f"{type(self).__name__}: ops must be one of {tuple(_IMPLEMENTATIONS)}, got {ops!r}")
        self.temperature = float(temperature)
        self.reduction = reduction
        self.ops = ops

    def _cutoffs(self):
        return {}

    def forward(self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        query = _check.matrix(query, "query")
        _check.matrix(key, "key", like=query, like_name="query", rows=query.shape[0], same_dtype=True)
        _check.matrix(queue, "queue", like=query, like_name="query", same_dtype=True)
        error = temperature_error(type(self).__name__, self.temperature, query.dtype, self.weighting)
        if error is not None:
            raise ValueError(error)
        _check.check_values(finite=[("query", query), ("key", key), ("queue", queue)])
        loss, _ = _IMPLEMENTATIONS[self.ops].info_nce(
            query, key, queue, temperature=self.temperature, weighting=self.weighting, **self._cutoffs()
        )
        if self.reduction == "mean":
            return batch_mean(loss)
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}, ops={self.ops!r}"


class DaNCELoss(InfoNCELoss):
    """DiVA's distance-adapted NCE: InfoNCE whose negative logits are scaled by row-normalised
    distance-weighted-sampling weights (docs/design.md §2.3; constants, no gradient through them).

    Args:
        temperature: T, finite and > 0; DiVA uses 0.01.
        lower_cutoff: distances below it count as it (finite, > 0).
        upper_cutoff: negatives farther than this get weight 0 (>= lower_cutoff; inf for none).
        reduction, ops: as in InfoNCELoss; so are the inputs and the empty batch.
    """

    weighting = "dance"

    def __init__(
        self,
        temperature: float = 0.01,
        *,
        lower_cutoff: float = 0.5,
        upper_cutoff: float = 1.4,
        reduction: str = "mean",
        ops: str = "fused",
    ):
        super().__init__(temperature, reduction=reduction, ops=ops)
        self.lower_cutoff, self.upper_cutoff = _check.cutoffs(lower_cutoff, upper_cutoff)

    def _cutoffs(self):
        return {"lower_cutoff": self.lower_cutoff, "upper_cutoff": self.upper_cutoff}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lower_cutoff={self.lower_cutoff}, upper_cutoff={self.upper_cutoff}"
