"""Typed wrappers of the compiled operators (torch.ops.diva_ext.*).

Each wrapper documents shapes and semantics; the operator itself validates its arguments and
names the one that is wrong.
"""

from typing import Optional

import torch


def pairwise_distance(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, *, squared: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` and the rows of ``y``.

    Args:
        x: [N, D] float tensor (float16/bfloat16 too on CUDA).
        y: [M, D] tensor of x's dtype and device; ``None`` means ``x`` (and then the diagonal is
            computed exactly).
        squared: return squared distances ``s`` instead of ``sqrt(max(s, eps))``.
        eps: floor under the square root; where it (or ``s >= 0``) is active the gradient is 0.

    Returns:
        [N, M] tensor, ``s_ij = max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0)``, with near points
        recomputed by direct difference (self-distance of unit vectors <= 1e-5 in float32).
        Differentiable with respect to ``x`` and ``y``.
    """
    return torch.ops.diva_ext.pairwise_distance(x, y, bool(squared), float(eps))
