"""Float tolerances derived from rounding-error models, not from what one CPU happened to give.

u is the unit roundoff (eps / 2): a correctly rounded operation returns x (1 + delta), |delta| <= u.

- ``gamma(n)``: Higham's gamma_n = n u / (1 - n u). A sum or dot product of n terms computed in any
  order (blocked, SIMD lanes, threads, FMA or not) puts every term through at most n roundings, so
  |computed - exact| <= gamma_n * sum |terms| (Higham, Accuracy and Stability, 2nd ed., sec. 3.1).
- ``probabilistic_gamma(n)``: Higham & Mary (SIAM J. Sci. Comput. 41, 2019, Thm. 2.4): with
  independent mean-zero rounding errors the same bound holds with lambda sqrt(n) u in place of n u,
  except with probability <= 2 n exp(-lambda^2 (1 - u)^2 / 2); lambda is chosen for FAILURE.
- ``accumulation(n)``: the smaller of the two (both are bounds; the second with that probability).
- ``rounding_sensitivity(f, inputs)``: the first-order change of f when every input moves by one
  relative ``rel`` (default eps = 2u, one float32 ulp): rel * sum |d f / d x| |x|, by float64 autograd.
- ``first_order_error_bound(f, inputs)``: the linearised forward error of a whole computation. f runs
  in float64 and marks each quantity the float32 code rounds with ``perturb(v, radius)``; the bound
  is sum over marks of |d f / d v| radius (Higham sec. 3.3, "running error analysis" to first order).
  Second-order terms are O(n u) relative to it and covered by ``SECOND_ORDER``.

The failure probability of every probabilistic bound in the suite is FAILURE per comparison.
"""

import math
from typing import Callable, Sequence

import torch

FAILURE = 1e-6
# Headroom for the neglected second-order terms of a linearised bound (relative size n u << 1)
# and for elementary functions (exp, log, sqrt in libm/SLEEF) that are within 1 ulp = 2u, not u.
SECOND_ORDER = 2.0


def unit_roundoff(dtype: torch.dtype = torch.float32) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    nu = max(n, 1) * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma: n u = {nu} >= 1, no bound")
    return nu / (1 - nu)


def probabilistic_gamma(n: int, dtype: torch.dtype = torch.float32, failure: float = FAILURE) -> float:
    u, n = unit_roundoff(dtype), max(n, 1)
    lam = math.sqrt(2 * math.log(2 * n / failure)) / (1 - u)
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def accumulation(n: int, dtype: torch.dtype = torch.float32, failure: float = FAILURE) -> float:
    return min(gamma(n, dtype), probabilistic_gamma(n, dtype, failure))


def _each_output(out: torch.Tensor, wrt: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum over wrt of |d out_i / d w| * weight, for every element out_i (one backward each)."""
    flat = out.reshape(-1)
    bound = torch.zeros(flat.numel(), dtype=torch.float64)
    for i in range(flat.numel()):
        grads = torch.autograd.grad(flat[i], wrt, retain_graph=True, allow_unused=True)
        bound[i] = sum(((g.abs() * w).sum() for g, w in zip(grads, weights) if g is not None), torch.tensor(0.0))
    return bound.view(out.shape)


def rounding_sensitivity(f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                         rel: float = torch.finfo(torch.float32).eps) -> torch.Tensor:
    """rel * sum_x |d f / d x| |x| for every element of f(*inputs), in float64: the first-order
    change of f when each input moves by ``rel`` of itself (default one float32 ulp = 2u)."""
    xs = [x.detach().double().requires_grad_() for x in inputs]
    out = f(*xs)
    return _each_output(out, xs, [rel * x.detach().abs() for x in xs])


class Perturbations:
    """The rounding points of one float64 evaluation: ``perturb(v, radius)`` returns v unchanged
    in value but lets the bound see how far an error of up to ``radius`` (elementwise) in v moves
    the result."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype, self.u = dtype, unit_roundoff(dtype)
        self.points, self.radii = [], []

    def __call__(self, v: torch.Tensor, radius) -> torch.Tensor:
        z = torch.zeros_like(v, requires_grad=True)
        self.points.append(z)
        self.radii.append(torch.as_tensor(radius, dtype=torch.float64).detach().expand_as(v))
        return v + z

    def rounded(self, v: torch.Tensor, ulps: float = 1.0) -> torch.Tensor:
        """v as one float32 operation returns it: relative error <= ulps * u."""
        return self(v, ulps * self.u * v.detach().abs())

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b.T over the last dimension n, with the accumulation error of any summation order."""
        n = a.shape[-1]
        return self(a @ b.transpose(-1, -2), accumulation(n, self.dtype) * (a.detach().abs() @ b.detach().abs().transpose(-1, -2)))


def first_order_error_bound(f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sum over the marks of f(perturb, *inputs64) of |d out / d mark| * radius, per output element:
    the linearised worst-case error of a ``dtype`` computation that rounds where f marks."""
    perturb = Perturbations(dtype)
    out = f(perturb, *[x.detach().double() for x in inputs])
    return _each_output(out, perturb.points, perturb.radii)


def assert_within(got: torch.Tensor, want: torch.Tensor, bound, what: str = "") -> None:
    """|got - want| <= bound elementwise (got upcast to want's dtype); the message gives the worst
    ratio of error to bound."""
    err = (got.to(want.dtype) - want).abs()
    bound = torch.as_tensor(bound, dtype=want.dtype).expand_as(err)
    ok = err <= bound
    if not bool(ok.all()):
        ratio = (err / bound).nan_to_num(float("inf"))
        i = int(ratio.argmax())
        raise AssertionError(f"{what}: {int((~ok).sum())} of {err.numel()} elements beyond their error bound; "
                             f"worst at flat index {i}: error {err.reshape(-1)[i].item():.3e}, bound "
                             f"{bound.reshape(-1)[i].item():.3e} (ratio {ratio.reshape(-1)[i].item():.3g})")
