"""Contrastive losses against a memory queue: MoCo's InfoNCE and DiVA's DaNCE.

Both wrap diva_ext.ops.info_nce (or, with ``ops="reference"``, the explicit-logits version in
diva_ext.reference, for comparison). The queue is usually a MemoryQueue's ``negatives()``; for
in-batch negatives pass the other view as the queue.
"""

import torch
from torch import nn

from diva_ext import ops as _fused
from diva_ext import reference as _reference

_REDUCTIONS = ("mean", "sum", "none")
_IMPLEMENTATIONS = {"fused": _fused, "reference": _reference}


class InfoNCELoss(nn.Module):
    """InfoNCE of queries against their keys and a queue of negatives (MoCo).

    Args:
        temperature: T > 0 of the logits ``<q, k> / T``.
        reduction: "mean" (default), "sum" or "none" over the batch.
        ops: "fused" (diva_ext.ops) or "reference" (the explicit [B, K+1] logits).

    forward(query [B, D], key [B, D], queue [K, D]) -> the reduced loss (a [B] tensor for
    "none"). Rows L2-normalised by the caller. Gradients flow to every input that requires them.
    """

    weighting = "none"

    def __init__(self, temperature: float = 0.07, *, reduction: str = "mean", ops: str = "fused"):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
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
        loss, _ = _IMPLEMENTATIONS[self.ops].info_nce(
            query, key, queue, temperature=self.temperature, weighting=self.weighting, **self._cutoffs()
        )
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}, ops={self.ops!r}"


class DaNCELoss(InfoNCELoss):
    """DiVA's distance-adapted NCE: InfoNCE whose negative logits are scaled by row-normalised
    distance-weighted-sampling weights (DESIGN §2.3; constants, no gradient through them).

    Args:
        temperature: T > 0; DiVA uses 0.01.
        lower_cutoff: distances below it count as it (> 0).
        upper_cutoff: negatives farther than this get weight 0 (>= lower_cutoff; inf for none).
        reduction, ops: as in InfoNCELoss.
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
        if not (lower_cutoff > 0 and upper_cutoff >= lower_cutoff):
            raise ValueError(
                f"DaNCELoss: need 0 < lower_cutoff <= upper_cutoff, got {lower_cutoff} and {upper_cutoff}"
            )
        self.lower_cutoff = float(lower_cutoff)
        self.upper_cutoff = float(upper_cutoff)

    def _cutoffs(self):
        return {"lower_cutoff": self.lower_cutoff, "upper_cutoff": self.upper_cutoff}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lower_cutoff={self.lower_cutoff}, upper_cutoff={self.upper_cutoff}"
