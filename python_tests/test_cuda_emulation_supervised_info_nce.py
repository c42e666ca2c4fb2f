"""supervised_info_nce's CUDA kernels (info_nce's tile kernel with labels,
csrc/cuda/supervised_info_nce_kernels.cuh), run on the CPU through the CUDA emulation, and the CPU
kernels, each against the float64 reference within its own rounding-error bound
(supervised_info_nce_error_model): the two sum in different orders, so neither is the other's
reference. The saved statistics, positive counts and O are checked through the backward.

Sizes straddle the 64-row tiles of both sides and D's 16-steps and 64-column chunks; the emulated
"GPU" has 4 multiprocessors, so small batches split K across blocks and exercise the merge of the
positives' sums and counts. Every call runs under another schedule seed.
"""

import itertools

import pytest
import torch

from diva_ext import reference
from diva_ext.testing import emulation

from supervised_info_nce_cases import gradient_bounds, labelled_inputs, ref64, rows_error_bound
from supervised_info_nce_error_model import positive_mask
from tolerances import assert_within

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
C = torch.ops.diva_ext
BASE = emulation.base_seed()
_ids = itertools.count()
T = 0.1

# (B, K, D): B = 1 with K split over 4 blocks; K = 1; K and B not multiples of 64; D > 64.
SHAPES = [(1, 1, 1), (1, 200, 8), (31, 65, 17), (33, 1, 16), (65, 70, 33), (2, 64, 70)]


def next_seed():
    return BASE + next(_ids)


def case(b, k, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, labels, memory, memory_labels = labelled_inputs(b, k, d, g, dtype, classes=5)
    gl, gh = torch.randn(b, generator=g, dtype=dtype), torch.randn(b, generator=g, dtype=dtype)
    return q, labels, memory, memory_labels, gl, gh


def oracle(q, labels, memory, memory_labels, g, h):
    """(loss, lse, grad q, grad memory) of sum(g loss + h lse) by the float64 reference."""
    ins = [t.detach().double().requires_grad_() for t in (q, memory)]
    loss, lse = ref64(ins[0], labels, ins[1], memory_labels, temperature=T)
    grads = torch.autograd.grad((g.double() * loss + h.double() * lse).sum(), ins, allow_unused=True)
    return [loss.detach(), lse.detach(), *(torch.zeros_like(t) if gr is None else gr for t, gr in zip(ins, grads))]


FORWARD = [(s, torch.float32) for s in SHAPES] + [(s, torch.float64) for s in ((1, 200, 8), (65, 70, 33))]


@pytest.mark.parametrize("shape,dtype", FORWARD)
def test_forward_matches_cpu(shape, dtype):
    b, k, d = shape
    q, labels, memory, memory_labels, g, h = case(b, k, d, dtype, seed=b * 100 + k + d)
    want = oracle(q, labels, memory, memory_labels, g, h)
    bound = rows_error_bound(q, labels, memory, memory_labels, dtype, temperature=T)
    gq_bound = gradient_bounds(q, labels, memory, memory_labels, g, h, dtype, temperature=T)[0]
    got = E._supervised_info_nce_forward(q, labels, memory, memory_labels, T, True, next_seed())
    cpu = C._supervised_info_nce_forward(q, labels, memory, memory_labels, T, True)
    for name, fwd in (("emulated", got), ("cpu", cpu)):
        assert all(a.dtype == c.dtype and a.shape == c.shape for a, c in zip(fwd, cpu)), name
        assert_within(fwd[0], want[0], bound[0], f"{name} loss")
        assert_within(fwd[1], want[1], bound[1], f"{name} lse")
        assert torch.equal(fwd[2], positive_mask(labels, memory_labels).sum(1).long()), name
        # The saved-O backward reads the statistics, the counts, O and the mean positive rows.
        gq, _ = C._supervised_info_nce_backward(g, h, q, labels, memory, memory_labels, fwd[3], fwd[2], fwd[4], T,
                                               True, False)
        assert_within(gq, want[2], gq_bound, f"cpu backward from the {name} forward")
    loss, lse = E.supervised_info_nce(q, labels, memory, memory_labels, T, next_seed())
    assert_within(loss, want[0], bound[0], "emulated supervised_info_nce loss")


# (saved, needs): statistics and O, statistics only, or nothing (all recomputed).
CASES = [("stats+o", (True, False)), ("stats", (True, True)), ("none", (False, True)), ("none", (True, False))]
BACKWARD = [(s, torch.float32) for s in ((1, 200, 8), (31, 65, 17), (65, 70, 33), (2, 64, 70))] + \
    [((31, 65, 17), torch.float64)]


@pytest.mark.parametrize("shape,dtype", BACKWARD)
def test_backward_matches_cpu(shape, dtype):
    b, k, d = shape
    q, labels, memory, memory_labels, g, h = case(b, k, d, dtype, seed=b + 7 * k + d)
    _, _, positives, stats, o = C._supervised_info_nce_forward(q, labels, memory, memory_labels, T, True)
    saved = {"stats+o": (stats, positives, o), "stats": (stats, positives, None), "none": (None, None, None)}
    want = oracle(q, labels, memory, memory_labels, g, h)
    bounds = gradient_bounds(q, labels, memory, memory_labels, g, h, dtype, temperature=T)
    for which, needs in CASES:
        for name, grads in (
            ("emulated", E._supervised_info_nce_backward(g, h, q, labels, memory, memory_labels, *saved[which], T,
                                                         *needs, next_seed())),
            ("cpu", C._supervised_info_nce_backward(g, h, q, labels, memory, memory_labels, *saved[which], T, *needs)),
        ):
            for got, w, bound, needed, what in zip(grads, want[2:], bounds, needs, ("q", "memory")):
                if needed:
                    assert_within(got, w, bound, f"{name} {which} grad {what}")
                else:
                    assert got.numel() == 0


def test_empty_memory_and_rows_without_positives():
    q, labels, memory, memory_labels, g, h = case(3, 5, 4, torch.float32, seed=3)
    loss, lse, positives, _, _ = E._supervised_info_nce_forward(q, labels, memory[:0], memory_labels[:0], T, True,
                                                                next_seed())
    assert torch.equal(loss, torch.zeros(3)) and torch.equal(lse, torch.full((3,), -float("inf")))
    assert torch.equal(positives, torch.zeros(3, dtype=torch.int64))
    labels = torch.tensor([99, 99, 99])
    loss, _ = E.supervised_info_nce(q, labels, memory, memory_labels, T, next_seed())
    assert torch.equal(loss, torch.zeros(3))


def test_results_do_not_depend_on_the_schedule():
    """No atomics ("owner computes", splits merged in order): every interleaving, same bits."""
    q, labels, memory, memory_labels, g, h = case(3, 150, 20, torch.float32, seed=1)
    runs = []
    for seed in emulation.seeds(3):
        fwd = E._supervised_info_nce_forward(q, labels, memory, memory_labels, T, True, seed)
        bwd = E._supervised_info_nce_backward(g, h, q, labels, memory, memory_labels, fwd[3], fwd[2], None, T,
                                              True, True, seed)
        runs.append(list(fwd) + list(bwd))
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(run, runs[0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_torch(dtype):
    """float16/bfloat16 on the tensor-core path (float32 accumulation): our error against float64
    at most twice that of the explicit computation in the same dtype."""
    q, labels, memory, memory_labels, _, _ = case(40, 130, 32, torch.float32, seed=5)
    q, memory = q.to(dtype), memory.to(dtype)
    want = ref64(q, labels, memory, memory_labels, temperature=T)
    theirs = [t.double() for t in reference.supervised_info_nce(q, labels, memory, memory_labels, temperature=T)]
    ours = E.supervised_info_nce(q, labels, memory, memory_labels, T, next_seed())
    for o, t, w in zip(ours, theirs, want):
        assert o.dtype == dtype
        assert (o.double() - w).abs().max() <= 2 * (t - w).abs().max() + 1e-6
