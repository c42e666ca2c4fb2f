"""info_nce's CUDA kernels (csrc/cuda/info_nce_kernels.cuh), run on the CPU through the CUDA
emulation, and the CPU kernels (torch.ops.diva_ext.*), each against the float64 reference within
its own rounding-error bound (info_nce_rows_error_model for loss and lse,
info_nce_gradient_error_model for the gradients): the two sum in different orders, so neither is
the other's reference. The saved statistics and O are internal to the backward; they are checked
through it (a backward from the emulated forward's statistics and O stays within the bound).

Sizes straddle the 64-row tiles of both sides and D's 16-steps and 64-column chunks (1, 31, 33,
65, 130, ...). The emulated "GPU" has 4 multiprocessors, so small batches split K across blocks
and exercise the merge. Every call runs under another schedule seed.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from diva_ext.testing import emulation

import functools

from diva_ext import reference

from dance_regimes import REGIMES, UPPER_CUTOFF, tiny_normaliser_inputs
from info_nce_gradient_error_model import info_nce_gradient_bounds
from info_nce_rows_error_model import info_nce_rows
from tolerances import SECOND_ORDER, assert_within, first_order_error_bound, unit_roundoff

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


ARGS = dict(none=(0.1, "none", 0.5, 1.4), dance=(0.05, "dance", 0.5, 1.4))


def _kw(args):
    t, weighting, lower, upper = args
    return dict(temperature=t, weighting=weighting, lower_cutoff=lower, upper_cutoff=upper)


def oracle(q, pos, queue, g, h, args):
    """(loss, lse, grad q, grad k, grad queue) of sum(g loss + h lse) by the float64 reference."""
    ins = [t.detach().double().requires_grad_() for t in (q, pos, queue)]
    loss, lse = reference.info_nce(*ins, **_kw(args))
    grads = torch.autograd.grad((g.double() * loss + h.double() * lse).sum(), ins, allow_unused=True)
    return [loss.detach(), lse.detach(), *(torch.zeros_like(t) if gr is None else gr for t, gr in zip(ins, grads))]


def rows_bound(q, pos, queue, args, dtype):
    """[2, B]: bounds on (loss, lse) computed in dtype, row by row (rows are independent given the
    queue); for float64 doubled, the oracle's own error obeying the same model."""
    kw = _kw(args)
    if queue.shape[0] == 0:  # no negatives, no weights: the plain model (loss 0, lse = s+ / T)
        kw["weighting"] = "none"
    f = functools.partial(info_nce_rows, **kw)
    rows = [first_order_error_bound(f, (q[i:i + 1], pos[i:i + 1], queue), dtype) for i in range(q.shape[0])]
    bound = SECOND_ORDER * torch.cat(rows, 1) if rows else torch.zeros(2, 0, dtype=torch.float64)
    return 2 * bound if dtype == torch.float64 else bound


def gradient_bounds(q, pos, queue, g, h, args, dtype, storage=None):
    bounds = info_nce_gradient_bounds(q, pos, queue, g, h, **_kw(args), dtype=dtype, storage=storage)
    return [SECOND_ORDER * (2 if dtype == torch.float64 else 1) * b for b in bounds]


def assert_rows_within(loss, lse, want, bound, what):
    assert_within(loss, want[0], bound[0], f"{what} loss")
    assert_within(lse, want[1], bound[1], f"{what} lse")


def assert_stats_within(stats, want, bound, what):
    """The statistics' lse and loss columns, and lse with its carried rounding error lse_lo."""
    assert_rows_within(stats[:, 1], stats[:, 0], want, bound, f"{what} stats")
    assert_within(stats[:, 0].double() + stats[:, 5].double(), want[1], bound[1], f"{what} stats lse + lse_lo")


def assert_gradients_within(grads, want, bounds, needs, what):
    for got, w, b, needed, name in zip(grads, want[2:], bounds, needs, ("q", "k", "queue")):
        if needed:
            assert_within(got, w, b, f"{what} grad {name}")
        else:
            assert got.numel() == 0


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
    cpu = C._info_nce_forward(q, pos, queue, *args, True)
    gen = torch.Generator().manual_seed(b + k)
    g, h = torch.randn(b, generator=gen, dtype=dtype), torch.randn(b, generator=gen, dtype=dtype)
    want = oracle(q, pos, queue, g, h, args)
    bound = rows_bound(q, pos, queue, args, dtype)
    # The saved-O backward (no queue gradient) reads all of the forward's statistics and O.
    grad_bounds = gradient_bounds(q, pos, queue, g, h, args, dtype)
    needs = (True, True, False)
    for name, fwd in (("emulated", got), ("cpu", cpu)):
        assert all(a.dtype == c.dtype and a.shape == c.shape for a, c in zip(fwd, cpu))
        assert_rows_within(fwd[0], fwd[1], want, bound, name)
        assert_stats_within(fwd[2], want, bound, name)
        grads = C._info_nce_backward(g, h, q, pos, queue, fwd[2], fwd[3], *args, *needs)
        assert_gradients_within(grads, want, grad_bounds, needs, f"cpu backward from the {name} forward")
    loss, lse = E.info_nce(q, pos, queue, *args, next_seed())
    assert_rows_within(loss, lse, want, bound, "emulated info_nce")


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
    want = oracle(q, pos, queue, g, h, args)
    bounds = gradient_bounds(q, pos, queue, g, h, args, dtype)
    for which, needs in CASES:
        got = E._info_nce_backward(g, h, q, pos, queue, *saved[which], *args, *needs, next_seed())
        cpu = C._info_nce_backward(g, h, q, pos, queue, *saved[which], *args, *needs)
        assert_gradients_within(got, want, bounds, needs, f"emulated {which}")
        assert_gradients_within(cpu, want, bounds, needs, f"cpu {which}")


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
        g, h = torch.ones(2, dtype=dtype), torch.full((2,), 0.5, dtype=dtype)
        want = oracle(*ins, g, h, args)
        bound = rows_bound(*ins, args, dtype)
        grad_bounds = gradient_bounds(*ins, g, h, args, dtype)
        for name, fwd in (("emulated", E._info_nce_forward(*ins, *args, True, next_seed())),
                          ("cpu", C._info_nce_forward(*ins, *args, True))):
            assert_rows_within(fwd[0], fwd[1], want, bound, f"{dtype} {name}")
            assert_stats_within(fwd[2], want, bound, f"{dtype} {name}")
            for saved_o in (fwd[3], None):  # the statistics' DaNCE frame, with and without O
                needs = (True, True, saved_o is None)
                grads = C._info_nce_backward(g, h, *ins, fwd[2], saved_o, *args, *needs)
                assert_gradients_within(grads, want, grad_bounds, needs, f"{dtype} cpu backward from {name}")


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
    g = torch.randn(40, generator=torch.Generator().manual_seed(0)).to(dtype)
    want = oracle(q, pos, queue, g, 0 * g, args)
    # Products of the (rounded) inputs are exact in float32: float32's model of the same values,
    # plus the rounding of the outputs to the dtype (u of their size, or a subnormal step).
    bound = rows_bound(q.float(), pos.float(), queue.float(), args, torch.float32)
    info = torch.finfo(dtype)
    stored = unit_roundoff(dtype) * (torch.stack(want[:2]).abs() + bound) + info.tiny * info.eps
    assert_rows_within(loss, lse, want, bound + stored, "emulated")
    assert_stats_within(stats, want, bound, "emulated")  # statistics stay float32
    # O = P V on tensor cores with P rounded to the input dtype (as FlashAttention does): the
    # model rounds p to the dtype, and the gradients on output.
    grad_bounds = gradient_bounds(q.float(), pos.float(), queue.float(), g.float(), 0 * g.float(), args,
                                  torch.float32, storage=dtype)
    for saved_o in (o, None):
        needs = (True, True, saved_o is None)
        got = E._info_nce_backward(g, 0 * g, q, pos, queue, stats, saved_o, *args, *needs, next_seed())
        assert all(a.dtype == dtype for a in got)
        assert_gradients_within(got, want, grad_bounds, needs, f"emulated saved O {saved_o is not None}")


def test_empty_and_degenerate_inputs():
    q, pos, queue = inputs(3, 5, 4, torch.float64, seed=2)
    args = ARGS["dance"]
    for qq, kk, qu in ((q[:0], pos[:0], queue), (q, pos, queue[:0]), (q[:, :0], pos[:, :0], queue[:, :0])):
        g = torch.ones(qq.shape[0], dtype=torch.float64)
        want = oracle(qq, kk, qu, g, g, args)
        bound = rows_bound(qq, kk, qu, args, torch.float64)
        bounds = gradient_bounds(qq, kk, qu, g, g, args, torch.float64)
        for name, fwd, bwd in (
            ("emulated", E._info_nce_forward(qq, kk, qu, *args, True, next_seed()),
             E._info_nce_backward(g, g, qq, kk, qu, None, None, *args, True, True, True, next_seed())),
            ("cpu", C._info_nce_forward(qq, kk, qu, *args, True),
             C._info_nce_backward(g, g, qq, kk, qu, None, None, *args, True, True, True)),
        ):
            assert_rows_within(fwd[0], fwd[1], want, bound, name)
            assert_gradients_within(bwd, want, bounds, (True, True, True), name)


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
