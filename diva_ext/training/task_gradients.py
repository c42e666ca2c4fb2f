"""Whether every task of DiVA's objective trains: each term's gradient at the backbone's output.

The heads share one backbone, so what a task contributes to learning is its term's gradient with
respect to the backbone's output features [B, F] (the heads' common input). Each weighted term
is differentiated there on its own (``torch.autograd.grad`` with the graph kept): the extra work
is one backward pass through the heads and that term's loss, not through the backbone.
"""

import warnings
from typing import Callable, Dict, List, Mapping

import torch

from diva_ext import distributed
from diva_ext.training.objective import term_weight

# A task whose largest gradient norm over an epoch stays below this fraction of the largest norm
# of any task in that epoch (or is exactly 0) does not train: float32 sums of the other terms'
# gradients bury anything smaller than ~1e-7 of them.
VANISHING_RATIO = 1e-6


class VanishingTaskGradientWarning(UserWarning):
    """A task's gradient at the backbone stayed ~0 for a whole epoch."""


def term_gradient_norms(terms: Mapping[str, torch.Tensor], features: torch.Tensor,
                        task_weight: Callable[[str], float]) -> Dict[str, float]:
    """name -> L2 norm of d(weight x term)/d features over the global batch (float64 sum of
    squares; under torchrun each rank's rows are summed over the ranks). A term that does not
    reach ``features`` (a detached head) has norm 0."""
    squares = []
    for name, term in terms.items():
        grad = None
        if term.requires_grad:
            (grad,) = torch.autograd.grad(term_weight(name, task_weight) * term, features,
                                          retain_graph=True, allow_unused=True)
        squares.append(torch.zeros((), dtype=torch.float64, device=features.device) if grad is None
                       else grad.detach().double().square().sum())
    if not squares:
        return {}
    total = distributed.sum_over_ranks(torch.stack(squares))
    return dict(zip(terms, total.sqrt().tolist()))


class EpochGradientLog:
    """Per-epoch statistics of the steps' gradient norms: the mean and the largest per term."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.peaks: Dict[str, float] = {}
        self.steps = 0

    def add(self, norms: Mapping[str, float]) -> None:
        for name, norm in norms.items():
            self.sums[name] = self.sums.get(name, 0.0) + norm
            self.peaks[name] = max(self.peaks.get(name, 0.0), norm)
        self.steps += 1

    def means(self) -> Dict[str, float]:
        return {name: total / max(self.steps, 1) for name, total in self.sums.items()}

    def vanishing(self) -> List[str]:
        """The terms whose gradient stayed ~0 (see VANISHING_RATIO) in every step of the epoch."""
        largest = max(self.peaks.values(), default=0.0)
        return [name for name, peak in self.peaks.items() if peak == 0.0 or peak < VANISHING_RATIO * largest]


def warn_vanishing(names: List[str], epoch: int, peaks: Mapping[str, float]) -> str:
    """Warn (VanishingTaskGradientWarning) that ``names`` did not train in ``epoch``; returns the message."""
    detail = ", ".join(f"{n} (largest {peaks[n]:.3g})" for n in names)
    message = (f"epoch {epoch}: the gradient at the backbone of {detail} stayed ~0 for the whole epoch "
               f"(below {VANISHING_RATIO:g} of the largest task's): that task does not train")
    warnings.warn(message, VanishingTaskGradientWarning, stacklevel=3)
    return message
