"""DiVA's adversarial decorrelation of embedding heads (Milbich/Roth et al. 2020, Sec. 3).

For each (source -> target) pair, a small MLP regresses the target head from the source head.
The regressor learns to make them correlated; a gradient-reversal layer between the heads and
the regressor makes the heads learn the opposite, i.e. to decorrelate.
"""

import numbers
from typing import Dict, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from diva_ext import _validation as _check
from diva_ext.losses._reduction import batch_mean

# DiVA's pairs: every auxiliary head is decorrelated from the discriminative one.
DIVA_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("selfsimilarity", "discriminative"),
    ("shared", "discriminative"),
    ("intra", "discriminative"),
)


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by -scale."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, scale)


class AdversarialSeparation(nn.Module):
    """Sum over pairs of ``-rho * mean_batch(mean_dims((t * p)^2))``.

    ``t`` is the normalised, gradient-reversed target head and ``p`` the normalised output of the
    pair's MLP (dim -> hidden -> ReLU -> dim) on the normalised, gradient-reversed source head.
    As in DiVA's reference code, both heads pass through the reversal, so both are pushed away
    from what the regressor can predict.

    Args:
        pairs: (source, target) task names.
        weights: rho (finite, >= 0), one per pair or a single value for all (DiVA: 1500 CUB,
            100 CARS, 150 SOP).
        dim, hidden: head dimension and MLP width, integers >= 1 (128, 512 in DiVA).

    ``forward({task: [B, dim]}) -> scalar``: every head of a pair is a finite floating [B, dim]
    tensor, all with the same B on one device; a wrong one is a ValueError naming it (one device
    synchronisation checks the values). An empty batch (B = 0) gives an exact 0 that keeps the
    graph: backward gives zero gradients to the heads and the regressors, like every loss in
    diva_ext.losses (pytorch-metric-learning's zero loss).
    """

    def __init__(self, pairs: Sequence[Tuple[str, str]] = DIVA_PAIRS,
                 weights: Union[float, Sequence[float]] = 1500.0, dim: int = 128, hidden: int = 512):
        super().__init__()
        self.pairs = [tuple(p) for p in pairs]
        if not self.pairs or any(len(p) != 2 or p[0] == p[1] for p in self.pairs):
            raise ValueError(f"pairs must be (source, target) task names, got {pairs!r}")
        self.dim, self.hidden = _check.integer(dim, "dim"), _check.integer(hidden, "hidden")
        if isinstance(weights, numbers.Number):
            weights = [weights] * len(self.pairs)
        if isinstance(weights, str) or not hasattr(weights, "__iter__"):
            raise TypeError(f"weights must be a real number or a sequence of them, got {type(weights).__name__}")
        weights = [_check.real(w, f"weights[{i}]", minimum=0.0) for i, w in enumerate(weights)]
        if len(weights) != len(self.pairs):
            raise ValueError(f"weights: expected one per pair ({len(self.pairs)}) or a single value, got {len(weights)}")
        self.weights = weights
        self.regressors = nn.ModuleDict({
            self.key(s, t): nn.Sequential(nn.Linear(self.dim, self.hidden), nn.ReLU(),
                                          nn.Linear(self.hidden, self.dim))
            for s, t in self.pairs
        })

    @staticmethod
    def key(source: str, target: str) -> str:
        return f"{source}->{target}"

    def forward(self, heads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = sorted({n for p in self.pairs for n in p} - set(heads))
        if missing:
            raise KeyError(f"AdversarialSeparation: heads {missing} missing from the input")
        self._check_heads(heads)
        reversed_heads: Dict[str, torch.Tensor] = {}
        for name in {n for p in self.pairs for n in p}:
            reversed_heads[name] = nn.functional.normalize(reverse_gradient(heads[name]), dim=-1)
        loss = heads[self.pairs[0][0]].new_zeros(())
        for (source, target), rho in zip(self.pairs, self.weights):
            projection = nn.functional.normalize(self.regressors[self.key(source, target)](reversed_heads[source]), dim=-1)
            loss = loss - rho * batch_mean((reversed_heads[target] * projection).square().mean(dim=-1))
        return loss

    def _check_heads(self, heads: Mapping[str, torch.Tensor]) -> None:
        names = sorted({n for p in self.pairs for n in p})
        first, first_name = None, ""
        for name in names:
            shown = f"heads[{name!r}]"
            if first is None:
                first, first_name = _check.matrix(heads[name], shown), shown
                if first.shape[1] != self.dim:
                    raise ValueError(f"{shown} must have dim = {self.dim} columns, got shape {list(first.shape)}")
            else:
                _check.matrix(heads[name], shown, like=first, like_name=first_name, rows=first.shape[0])
        _check.check_values(finite=[(f"heads[{name!r}]", heads[name]) for name in names])
