"""pairwise_distance's CUDA kernels (csrc/cuda/pairwise_distance_kernels.cuh), run on the CPU
through the CUDA emulation, and the CPU kernels (torch.ops.diva_ext.*), each against a float64
direct-difference oracle within its own rounding-error bound (pairwise_distance_error_model): the
two sum in different orders, so neither is the other's reference.

Sizes straddle the 64-row tiles and the 16-wide reduction steps (1, 31, 33, 127, 129, ...);
every call runs under another schedule seed (emulation.seeds), so the suite covers many
interleavings of the tiles' barriers.
"""

import itertools

import pytest
import torch

from diva_ext.testing import emulation

from pairwise_distance_error_model import distance_error_bound, gradient_error_bound
from tolerances import assert_within, unit_roundoff

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
C = torch.ops.diva_ext
BASE = emulation.base_seed()

# (n, m, d): n, m around the 64-tile, d around the 16-step (backward tiles d by 64 too).
SHAPES = [(1, 1, 1), (1, 33, 5), (31, 33, 17), (33, 31, 16), (127, 129, 33), (129, 1, 70), (65, 64, 3)]
DTYPES = [torch.float32, torch.float64]
_ids = itertools.count()


def next_seed():
    return BASE + next(_ids)


def oracle(x, y, squared, eps=1e-12):
    """Float64 distances by direct difference, with the contract's floor sqrt(max(s, eps))."""
    s = (x.double()[:, None, :] - (x if y is None else y).double()[None, :, :]).square().sum(-1)
    return s if squared else s.clamp_min(eps).sqrt()


def assert_forward_within_bound(got, x, y, squared, what):
    y_ = x if y is None else y
    assert_within(got, oracle(x, y, squared), distance_error_bound(x, y_, squared), what)


def oracle_gradients(grad, x, y, squared):
    x64 = x.detach().double().requires_grad_()
    y64 = None if y is None else y.detach().double().requires_grad_()
    out = oracle(x64, y64, squared)
    return torch.autograd.grad((out * grad.double()).sum(), (x64,) if y is None else (x64, y64))


def gradient_bounds(grad, x, y, squared, **model):
    """(bound on grad x, bound on grad y); with y None x plays both roles, so the bounds add."""
    bx, by = gradient_error_bound(x, x if y is None else y, grad, squared, **model)
    return (bx + by,) if y is None else (bx, by)


def stored_in(dtype, value):
    """The error of rounding ``value`` to ``dtype``: u |value|, or one subnormal spacing (float16's
    sqrt(eps) = 1e-6 is subnormal, stored rounded up)."""
    info = torch.finfo(dtype)
    return unit_roundoff(dtype) * value.abs() + info.tiny * info.eps


def inputs(n, m, d, dtype, seed, near=True, zero=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(m, d, generator=g, dtype=dtype)
    if n > 2 and m > 2:
        if zero:
            y[1] = x[2]  # a zero distance: the exact-recompute path and the clamp
        if near:
            # A near point (exact recompute). Not in gradient tests: there the weight 1/out is
            # ~1e4 and x * rowsum(w) - w @ y cancels, so any two summation orders differ ~1e-3.
            y[2] = x[1] + 1e-4
    return x, y


@pytest.mark.parametrize("n, m, d", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_cpu(n, m, d, dtype):
    x, y = inputs(n, m, d, dtype, seed=n * 1000 + d)
    for squared in (False, True):
        assert_forward_within_bound(E.pairwise_distance(x, y, squared, 1e-12, next_seed()), x, y, squared, "emulated")
        assert_forward_within_bound(C.pairwise_distance(x, y, squared, 1e-12), x, y, squared, "cpu")


@pytest.mark.parametrize("n, d", [(1, 3), (31, 17), (33, 16), (129, 33)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_self_distance(n, d, dtype):
    x, _ = inputs(n, n, d, dtype, seed=n + d)
    for squared in (False, True):
        assert_forward_within_bound(E.pairwise_distance(x, None, squared, 1e-12, next_seed()), x, None, squared,
                                    "emulated")
        assert_forward_within_bound(C.pairwise_distance(x, None, squared, 1e-12), x, None, squared, "cpu")
    if dtype == torch.float32:  # the contract's precision bound holds on the CUDA path too
        assert E.pairwise_distance(x, None, False, 1e-12, next_seed()).diagonal().abs().max() <= 1e-5


@pytest.mark.parametrize("n, m, d", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_cpu(n, m, d, dtype):
    x, y = inputs(n, m, d, dtype, seed=n * 7 + m + d, near=False)
    g = torch.Generator().manual_seed(d)
    grad = torch.randn(n, m, generator=g, dtype=dtype)
    for squared in (False, True):
        out = C.pairwise_distance(x, y, squared, 1e-12)
        wants, bounds = oracle_gradients(grad, x, y, squared), gradient_bounds(grad, x, y, squared)
        for needs_x, needs_y in [(True, True), (True, False), (False, True)]:
            got = E._pairwise_distance_backward(grad, x, y, out, squared, 1e-12, needs_x, needs_y, next_seed())
            cpu = C._pairwise_distance_backward(grad, x, y, out, squared, 1e-12, needs_x, needs_y)
            for gt, ct, wt, bound, needed in zip(got, cpu, wants, bounds, (needs_x, needs_y)):
                if needed:
                    assert_within(gt, wt, bound, f"emulated squared={squared}")
                    assert_within(ct, wt, bound, f"cpu squared={squared}")
                else:
                    assert gt.numel() == 0


@pytest.mark.parametrize("n, d", [(1, 3), (31, 17), (33, 70), (129, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_self_matches_cpu(n, d, dtype):
    x, _ = inputs(n, n, d, dtype, seed=n * 3 + d, near=False)
    grad = torch.randn(n, n, generator=torch.Generator().manual_seed(n), dtype=dtype)
    for squared in (False, True):
        out = C.pairwise_distance(x, None, squared, 1e-12)
        gx, gy = E._pairwise_distance_backward(grad, x, None, out, squared, 1e-12, True, False, next_seed())
        cx, _ = C._pairwise_distance_backward(grad, x, None, out, squared, 1e-12, True, False)
        (want,), (bound,) = oracle_gradients(grad, x, None, squared), gradient_bounds(grad, x, None, squared)
        assert_within(gx, want, bound, f"emulated squared={squared}")
        assert_within(cx, want, bound, f"cpu squared={squared}")
        assert gy.numel() == 0


def test_results_do_not_depend_on_the_schedule():
    """The kernels have no atomics ("owner computes"): every interleaving gives the same bits."""
    x, y = inputs(70, 40, 20, torch.float32, seed=5)
    outs = [E.pairwise_distance(x, y, False, 1e-12, s) for s in emulation.seeds(4)]
    assert all(torch.equal(o, outs[0]) for o in outs)
    grad = torch.randn(70, 40)
    grads = [E._pairwise_distance_backward(grad, x, y, outs[0], False, 1e-12, True, True, s) for s in emulation.seeds(4)]
    assert all(torch.equal(a, b) for g in grads for a, b in zip(g, grads[0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_and_backward(dtype):
    """float16/bfloat16 (CUDA-only dtypes, float32 arithmetic inside) against the float64 oracle of
    the same values: float32's bound plus the rounding of the result to the dtype; the float32 CPU
    kernel on the same values within float32's."""
    # With a zero distance: float16 stores the clamped out = sqrt(eps) rounded up, and the
    # backward must still see the clamp (pd_clamped_output).
    x, y = inputs(33, 65, 24, torch.float32, seed=9, near=False, zero=True)
    x, y = x.to(dtype), y.to(dtype)
    x32, y32 = x.float(), y.float()
    got = E.pairwise_distance(x, y, False, 1e-12, next_seed())
    want = C.pairwise_distance(x32, y32, False, 1e-12)
    exact = oracle(x32, y32, False)
    bound = distance_error_bound(x32, y32)
    assert_within(got, exact, bound + stored_in(dtype, exact + bound), "emulated forward")
    assert_within(want, exact, bound, "cpu float32 forward")
    grad = torch.randn(33, 65).to(dtype)
    out = want.to(dtype)
    gx, gy = E._pairwise_distance_backward(grad, x, y, out, False, 1e-12, True, True, next_seed())
    # The float32 reference gets the float32 output: its clamp value is float32's sqrt(eps).
    cx, cy = C._pairwise_distance_backward(grad.float(), x32, y32, want, False, 1e-12, True, True)
    wants = oracle_gradients(grad.float(), x32, y32, False)
    bounds32 = gradient_bounds(grad.float(), x32, y32, False)
    # The emulated backward reads out rounded to the dtype: one more relative u of the distances.
    bounds = gradient_bounds(grad.float(), x32, y32, False, dtype=torch.float32, out_rel=unit_roundoff(dtype))
    for a, c, w, b32, b, name in zip((gx, gy), (cx, cy), wants, bounds32, bounds, ("grad x", "grad y")):
        assert a.dtype == dtype
        assert_within(a, w, b + stored_in(dtype, w.abs() + b), f"emulated {name}")
        assert_within(c, w, b32, f"cpu {name}")


def test_empty_and_zero_dim_inputs():
    x = torch.randn(5, 0)
    for squared in (False, True):
        got = E.pairwise_distance(x, torch.randn(3, 0), squared, 1e-12, next_seed())
        # D = 0: every s is an empty sum, exactly 0, so out is exactly the floor (no rounding to bound).
        torch.testing.assert_close(got, C.pairwise_distance(x, torch.randn(3, 0), squared, 1e-12), rtol=0, atol=0)
    assert E.pairwise_distance(torch.randn(0, 4), torch.randn(3, 4), False, 1e-12, 0).shape == (0, 3)


KERNELS = "csrc/cuda/pairwise_distance_kernels.cuh"


@pytest.mark.parametrize("line", emulation.barrier_lines(KERNELS))
def test_removing_any_barrier_is_caught(line):
    """Mutation test: without any one of the kernels' __syncthreads(), results change (the
    correct kernels are bitwise schedule-independent) or the launch fails."""
    x, y = inputs(70, 67, 40, torch.float32, seed=line, near=False)
    grad = torch.randn(70, 67, generator=torch.Generator().manual_seed(line))

    def run(seed):
        out = E.pairwise_distance(x, y, False, 1e-12, seed)
        return [out, *E._pairwise_distance_backward(grad, x, y, out, False, 1e-12, True, True, seed)]

    assert emulation.barrier_removal_is_caught(KERNELS, line, run), \
        f"removing the __syncthreads() at {KERNELS}:{line} went unnoticed"


def test_the_kernels_have_barriers_to_mutate():
    assert len(emulation.barrier_lines(KERNELS)) >= 2
