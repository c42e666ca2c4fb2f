"""Pure-PyTorch versions of every diva_ext operator.

The test oracle, the benchmark baseline and the trainer's ``--ops reference``. They follow the
same contract as diva_ext.ops (../shared/DESIGN.md §2) with ordinary PyTorch autograd.
"""

from typing import Optional

import torch


def pairwise_distance(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, *, squared: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """Norm-expansion distances, as most DML code computes them: [N, D] x [M, D] -> [N, M]."""
    y = x if y is None else y
    s = (x.square().sum(1, keepdim=True) + y.square().sum(1) - 2.0 * x @ y.t()).clamp_min(0)
    return s if squared else s.clamp_min(eps).sqrt()
