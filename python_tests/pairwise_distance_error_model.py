"""Rounding-error bounds of pairwise_distance and its gradients, for comparisons with float64.

Values. The norm expansion s = |x|^2 + |y|^2 - 2 <x, y> sums D + 2 rounded products in some order,
so |s_computed - s| <= gamma_{D+2} (|x|^2 + |y|^2 + 2 sum_k |x_k y_k|) (tolerances.accumulation);
the direct form sum_k (x_k - y_k)^2 (the kernels' path for near points) has a smaller bound, as
(x_k - y_k)^2 <= x_k^2 + y_k^2 + 2 |x_k y_k|. Distances: |sqrt(a) - sqrt(b)| <= min(|a - b| / sqrt(b),
sqrt(|a - b|)), plus one rounding of the square root.

Gradients of sum(g * out) (non-squared: c = g / d; squared: c = 2 g): grad x_i = sum_j c_ij (x_i - y_j).
Each term carries the relative error of c (the distance's, plus a rounding) and every term goes
through at most M + 2 roundings in the sum, so |error| <= sum_j |c_ij| (rel_ij + gamma_{M+2})
(|x_i| + |y_j|) componentwise; likewise for y with the roles swapped.
"""

import torch

from tolerances import accumulation, unit_roundoff


def _squared_bound(x, y, dtype):
    x, y = x.double(), y.double()
    scale = x.square().sum(1, keepdim=True) + y.square().sum(1) + 2 * x.abs() @ y.abs().t()
    return accumulation(x.shape[1] + 2, dtype) * scale


def distance_error_bound(x: torch.Tensor, y: torch.Tensor, squared: bool = False, dtype=None,
                         oracle: bool = True) -> torch.Tensor:
    """Elementwise bound [N, M] on |pairwise_distance(x, y) - oracle| for inputs of ``dtype``
    (default x's), the oracle being a float64 evaluation of the same inputs, whose own error the
    bound includes (with ``oracle``; it matters when dtype is float64)."""
    dtype = dtype or x.dtype
    delta = _squared_bound(x, y, dtype) + (_squared_bound(x, y, torch.float64) if oracle else 0)
    if squared:
        return delta
    d = (x.double()[:, None] - y.double()[None]).square().sum(-1).sqrt()
    u = unit_roundoff(dtype) + (unit_roundoff(torch.float64) if oracle else 0)
    return torch.minimum(delta / d, delta.sqrt()) + u * d


def gradient_error_bound(x: torch.Tensor, y: torch.Tensor, grad_out: torch.Tensor, squared: bool = False,
                         dtype=None, oracle: bool = True, out_rel: float = 0.0):
    """Bounds (on grad x [N, D], on grad y [M, D]) of the gradients of sum(grad_out * distances)
    against a float64 oracle, whose own error the bounds include (with ``oracle``). ``out_rel``:
    a further relative error of the distances the backward is given (e.g. stored in float16)."""
    dtype = dtype or x.dtype
    if oracle:
        ours, theirs = (gradient_error_bound(x, y, grad_out, squared, t, False, r)
                        for t, r in ((dtype, out_rel), (torch.float64, 0.0)))
        return ours[0] + theirs[0], ours[1] + theirs[1]
    x64, y64, g = x.double(), y.double(), grad_out.double()
    u, m, n = unit_roundoff(dtype), y.shape[0], x.shape[0]
    if squared:
        a = 2 * g.abs() * (u + accumulation(m + 2, dtype))
        b = 2 * g.abs() * (u + accumulation(n + 2, dtype))
    else:
        d = (x64[:, None] - y64[None]).square().sum(-1).sqrt()
        rel = distance_error_bound(x, y, False, dtype, False) / d + out_rel + 2 * u  # of d, then of g / d
        # Identical rows: the kernels recompute near pairs directly, so s is exactly 0, the clamp
        # is active and the term is exactly 0 in the kernels and in the oracle alike.
        live = d > 0
        a = torch.where(live, g.abs() / d * (rel + accumulation(m + 2, dtype)), 0.0)
        b = torch.where(live, g.abs() / d * (rel + accumulation(n + 2, dtype)), 0.0)
    bx = a.sum(1, keepdim=True) * x64.abs() + a @ y64.abs()
    by = b.sum(0)[:, None] * y64.abs() + b.t() @ x64.abs()
    return bx, by
