"""info_nce's CUDA kernels (csrc/cuda/info_nce_kernels.cuh), run on the CPU through the CUDA
emulation, against the CPU kernels (torch.ops.diva_ext.*).

Sizes straddle the 64-row tiles of both sides and D's 16-steps and 64-column chunks (1, 31, 33,
65, 130, ...). The emulated "GPU" has 4 multiprocessors, so small batches split K across blocks
and exercise the merge. Every call runs under another schedule seed.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from diva_ext.testing import emulation

from dance_regimes import REGIMES, UPPER_CUTOFF, tiny_normaliser_inputs

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
C = torch.ops.diva_ext
BASE = emulation.base_seed()
_ids = itertools.count()

# (B, K, D): B=1 with K split over 4 blocks; K=1; K and B not multiples of 64; D > 64.
SHAPES = [(1, 1, 1), (1, 200, 8), (31, 65, 17), (33, 1, 16), (65, 70, 33), (2, 64, 70)]
WEIGHTINGS = ["none", "dance"]


def next_seed():
    return BASE + next(_ids)


def inputs(b, k, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    pos = F.normalize(q + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    if k > 2 and b > 1:
        queue[1] = F.normalize(q[0] + 0.05 * torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    return q.to(dtype), pos.to(dtype), queue.to(dtype)


def tol(dtype, weighting="none", scale=1.0):
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10 * scale)
    # NB: float32 DaNCE weights exp(log w - M - log Z) carry log w's rounding (~1e-5 of values
    # up to ~100) into logits c s / T of up to 1/T: relative errors ~1e-4 where one weight rules.
    eps = 2e-4 if weighting == "dance" else 2e-5
    return dict(rtol=eps, atol=eps * scale)


ARGS = dict(none=(0.1, "none", 0.5, 1.4), dance=(0.05, "dance", 0.5, 1.4))


# float32 on every shape, float64 on a few (the kernels are the same templates).
FORWARD = [(s, torch.float32) for s in SHAPES] + [(s, torch.float64) for s in ((1, 200, 8), (65, 70, 33))]
BACKWARD_SHAPES = [(1, 200, 8), (31, 65, 17), (65, 70, 33), (2, 64, 70)]
BACKWARD = [(s, torch.float32) for s in BACKWARD_SHAPES] + [((31, 65, 17), torch.float64)]


@pytest.mark.parametrize("shape,dtype", FORWARD)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_forward_matches_cpu(shape, dtype, weighting):
    b, k, d = shape
    q, pos, queue = inputs(b, k, d, dtype, seed=b * 100 + k + d)
    args = ARGS[weighting]
    got = E._info_nce_forward(q, pos, queue, *args, True, next_seed())
    want = C._info_nce_forward(q, pos, queue, *args, True)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, **tol(dtype, weighting, max(1.0, w.abs().max().item())))
    loss, lse = E.info_nce(q, pos, queue, *args, next_seed())
    torch.testing.assert_close(loss, want[0], **tol(dtype))
    torch.testing.assert_close(lse, want[1], **tol(dtype))


# (saved, needs): the saved statistics and O, statistics only, or nothing (all recomputed), with
# the gradients asked for in the combinations that take different paths.
CASES = [("stats+o", (True, True, False)), ("stats", (True, True, True)), ("none", (True, False, True)),
         ("stats+o", (False, False, True)), ("stats", (False, True, False)), ("none", (True, False, False))]


@pytest.mark.parametrize("shape,dtype", BACKWARD)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_backward_matches_cpu(shape, dtype, weighting):
    b, k, d = shape
    q, pos, queue = inputs(b, k, d, dtype, seed=b + k * 7 + d)
    args = ARGS[weighting]
    gen = torch.Generator().manual_seed(d)
    g, h = torch.randn(b, generator=gen, dtype=dtype), torch.randn(b, generator=gen, dtype=dtype)
    _, _, stats, o = C._info_nce_forward(q, pos, queue, *args, True)
    saved = {"stats+o": (stats, o), "stats": (stats, None), "none": (None, None)}
    for which, needs in CASES:
        got = E._info_nce_backward(g, h, q, pos, queue, *saved[which], *args, *needs, next_seed())
        want = C._info_nce_backward(g, h, q, pos, queue, *saved[which], *args, *needs)
        for gt, wt, needed in zip(got, want, needs):
            if needed:
                torch.testing.assert_close(gt, wt, **tol(dtype, weighting, wt.abs().max().item()))
            else:
                assert gt.numel() == 0


@pytest.mark.parametrize("regime", REGIMES)
def test_dance_rows_with_a_tiny_normaliser_match_cpu(regime):
    """The first pass's two frames (the far maximum, the in-cutoff sum) and the all-at-floor
    rule, with K over several tiles and B = 2 so that K splits over blocks and the partial
    states merge."""
    g = torch.Generator().manual_seed(BASE)
    q, pos, queue = tiny_normaliser_inputs(regime, g, rows=2, far=70, kept=60)
    args = (0.07, "dance", 0.5, UPPER_CUTOFF)
    for dtype in (torch.float64, torch.float32):
        ins = [t.to(dtype) for t in (q, pos, queue)]
        got = E._info_nce_forward(*ins, *args, True, next_seed())
        want = C._info_nce_forward(*ins, *args, True)
        for gt, wt in zip(got, want):
            torch.testing.assert_close(gt, wt, **tol(dtype, "dance", max(1.0, wt.abs().max().item())))


def test_results_do_not_depend_on_the_schedule():
    """No atomics ("owner computes", splits merged in order): every interleaving, same bits."""
    q, pos, queue = inputs(3, 150, 20, torch.float32, seed=1)
    args = ARGS["dance"]
    runs = []
    for seed in emulation.seeds(3):
        fwd = E._info_nce_forward(q, pos, queue, *args, True, seed)
        bwd = E._info_nce_backward(torch.ones(3), torch.zeros(3), q, pos, queue, fwd[2], None, *args, True, True, True, seed)
        runs.append(list(fwd) + list(bwd))
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(run, runs[0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_half_precision_against_float32(dtype, weighting):
    """float16/bfloat16 (CUDA-only dtypes; float32 accumulation) against the float32 CPU kernel
    on the same (rounded) values."""
    q, pos, queue = (t.to(dtype) for t in inputs(40, 100, 24, torch.float32, seed=3))
    args = ARGS[weighting]
    loss, lse, stats, o = E._info_nce_forward(q, pos, queue, *args, True, next_seed())
    assert loss.dtype == dtype and stats.dtype == torch.float32 and o.dtype == torch.float32
    w = C._info_nce_forward(q.float(), pos.float(), queue.float(), *args, True)
    eps = 1e-3 if dtype == torch.float16 else 8e-3
    torch.testing.assert_close(lse.float(), w[1], rtol=eps, atol=eps * w[1].abs().max().item())
    torch.testing.assert_close(stats, w[2], rtol=1e-4, atol=1e-4)
    # O = P V on tensor cores with P rounded to the input dtype (as FlashAttention does).
    torch.testing.assert_close(o, w[3], rtol=eps, atol=eps / 4 * w[3].abs().max().item())
    g = torch.randn(40, generator=torch.Generator().manual_seed(0))
    got = E._info_nce_backward(g.to(dtype), 0 * g.to(dtype), q, pos, queue, stats, None, *args, True, True, True, next_seed())
    want = C._info_nce_backward(g, 0 * g, q.float(), pos.float(), queue.float(), w[2], None, *args, True, True, True)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=4 * eps, atol=4 * eps * b.abs().max().item())


def test_empty_and_degenerate_inputs():
    q, pos, queue = inputs(3, 5, 4, torch.float64, seed=2)
    args = ARGS["dance"]
    for qq, kk, qu in ((q[:0], pos[:0], queue), (q, pos, queue[:0]), (q[:, :0], pos[:, :0], queue[:, :0])):
        got = E._info_nce_forward(qq, kk, qu, *args, True, next_seed())
        want = C._info_nce_forward(qq, kk, qu, *args, True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        g = torch.ones(qq.shape[0], dtype=torch.float64)
        got = E._info_nce_backward(g, g, qq, kk, qu, None, None, *args, True, True, True, next_seed())
        want = C._info_nce_backward(g, g, qq, kk, qu, None, None, *args, True, True, True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["q", "k", "queue"])
def test_non_finite_inputs_name_the_argument(name):
    q, pos, queue = inputs(4, 9, 6, torch.float32, seed=4)
    tensors = dict(q=q, k=pos, queue=queue)
    tensors[name] = tensors[name].clone()
    tensors[name][1, 2] = float("nan")
    with pytest.raises(RuntimeError, match=rf"{name} contains non-finite values"):
        E.info_nce(tensors["q"], tensors["k"], tensors["queue"], *ARGS["none"], next_seed())


KERNELS = "csrc/cuda/info_nce_kernels.cuh"


# Barriers that only order a read before a later write of the same shared memory by another
# warp (write-after-read): the emulation would have to run one warp a whole epilogue ahead of
# another to show their removal, which its random schedules practically never do. Each carries
# "write-after-read only" in its comment, with the reason it is needed.
WAR_ONLY = [
    n for n in emulation.barrier_lines(KERNELS)
    if "write-after-read only" in (emulation.REPO / KERNELS).read_text().splitlines()[n - 1]
]


@pytest.mark.parametrize("line", [n for n in emulation.barrier_lines(KERNELS) if n not in WAR_ONLY])
def test_removing_any_barrier_is_caught(line):
    """Mutation test: without any one of the kernels' __syncthreads(), results change (the
    correct kernels are bitwise schedule-independent) or the launch fails."""
    # D > 64: the positive logit's block reduction in the finish kernel has nonzero upper halves.
    q, pos, queue = inputs(33, 70, 70, torch.float32, seed=line)
    args = ARGS["dance"]
    g = torch.randn(33, generator=torch.Generator().manual_seed(line))

    def run(seed):
        out = []
        for dtype in (torch.float32, torch.float16):  # CUDA cores; tensor cores
            qd, pd, queued, gd = (t.to(dtype) for t in (q, pos, queue, g))
            fwd = E._info_nce_forward(qd, pd, queued, *args, True, seed)
            bwd = E._info_nce_backward(gd, gd.flip(0), qd, pd, queued, fwd[2], None, *args, True, True, True, seed)
            out += list(fwd) + list(bwd)
        return out

    assert emulation.barrier_removal_is_caught(KERNELS, line, run, tries=8), (
        f"removing the __syncthreads() at {KERNELS}:{line} went unnoticed"
    )


def test_the_kernels_have_barriers_to_mutate():
    assert len(emulation.barrier_lines(KERNELS)) >= 8 and len(WAR_ONLY) <= 1
