"""pairwise_distance's CUDA kernels (csrc/cuda/pairwise_distance_kernels.cuh), run on the CPU
through the CUDA emulation, against the CPU kernels (torch.ops.diva_ext.*).

Sizes straddle the 64-row tiles and the 16-wide reduction steps (1, 31, 33, 127, 129, ...);
every call runs under another schedule seed (emulation.seeds), so the suite covers many
interleavings of the tiles' barriers.
"""

import itertools

import pytest
import torch

from diva_ext.testing import emulation

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


def tolerances(dtype, d):
    # The CPU kernel accumulates through BLAS, the CUDA kernel in k order.
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10 * max(1, d))
    return dict(rtol=1e-5, atol=2e-5 * max(1, d))


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
        got = E.pairwise_distance(x, y, squared, 1e-12, next_seed())
        want = C.pairwise_distance(x, y, squared, 1e-12)
        torch.testing.assert_close(got, want, **tolerances(dtype, d))


@pytest.mark.parametrize("n, d", [(1, 3), (31, 17), (33, 16), (129, 33)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_self_distance(n, d, dtype):
    x, _ = inputs(n, n, d, dtype, seed=n + d)
    for squared in (False, True):
        got = E.pairwise_distance(x, None, squared, 1e-12, next_seed())
        want = C.pairwise_distance(x, None, squared, 1e-12)
        torch.testing.assert_close(got, want, **tolerances(dtype, d))
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
        for needs_x, needs_y in [(True, True), (True, False), (False, True)]:
            got = E._pairwise_distance_backward(grad, x, y, out, squared, 1e-12, needs_x, needs_y, next_seed())
            want = C._pairwise_distance_backward(grad, x, y, out, squared, 1e-12, needs_x, needs_y)
            for gt, wt, needed in zip(got, want, (needs_x, needs_y)):
                if needed:
                    torch.testing.assert_close(gt, wt, **tolerances(dtype, max(n, m)))
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
        wx, _ = C._pairwise_distance_backward(grad, x, None, out, squared, 1e-12, True, False)
        torch.testing.assert_close(gx, wx, **tolerances(dtype, n))
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
    """float16/bfloat16 (CUDA-only dtypes) against the float32 CPU kernel on the same values."""
    # With a zero distance: float16 stores the clamped out = sqrt(eps) rounded up, and the
    # backward must still see the clamp (pd_clamped_output).
    x, y = inputs(33, 65, 24, torch.float32, seed=9, near=False, zero=True)
    x, y = x.to(dtype), y.to(dtype)
    got = E.pairwise_distance(x, y, False, 1e-12, next_seed())
    want = C.pairwise_distance(x.float(), y.float(), False, 1e-12)
    rtol = 2e-3 if dtype == torch.float16 else 1.6e-2
    torch.testing.assert_close(got.float(), want, rtol=rtol, atol=rtol)
    grad = torch.randn(33, 65).to(dtype)
    out = want.to(dtype)
    gx, gy = E._pairwise_distance_backward(grad, x, y, out, False, 1e-12, True, True, next_seed())
    # The float32 reference gets the float32 output: its clamp value is float32's sqrt(eps).
    wx, wy = C._pairwise_distance_backward(grad.float(), x.float(), y.float(), want, False, 1e-12, True, True)
    for a, b in ((gx, wx), (gy, wy)):
        torch.testing.assert_close(a.float(), b, rtol=4 * rtol, atol=4 * rtol * b.abs().max().item())


def test_empty_and_zero_dim_inputs():
    x = torch.randn(5, 0)
    for squared in (False, True):
        got = E.pairwise_distance(x, torch.randn(3, 0), squared, 1e-12, next_seed())
        torch.testing.assert_close(got, C.pairwise_distance(x, torch.randn(3, 0), squared, 1e-12))
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
