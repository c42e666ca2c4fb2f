"""distance_weighted_negatives' CUDA kernels (csrc/cuda/distance_weighted_kernels.cuh), run on the
CPU through the CUDA emulation, against the CPU kernel and the float64 brute-force replay.

The emulated GPU has 2 SMs, so few anchor rows split the candidate axis across blocks (and the
finish kernel merges the splits); sizes straddle the 64-row/column tiles and the 16-wide
reduction steps. Every call runs under another schedule seed.
"""

import itertools
import math

import pytest
import torch

import distance_weighted_oracle as oracle
from diva_ext.testing import emulation

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
C = torch.ops.diva_ext
BASE = emulation.base_seed()
INF = math.inf
_ids = itertools.count()


def next_seed():
    return BASE + next(_ids)


def inputs(b, d, t, seed, classes=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, classes or max(1, b // 3), (b,), generator=g)
    anchors = torch.randint(0, b, (t,), generator=g)
    return x, labels, anchors


# (b, d, t, lower, upper): 1 row; one split per tile (t <= 64); 2 splits; no split (t > 128)
CASES = [
    (1, 3, 1, 0.5, INF),
    (31, 17, 33, 0.5, 1.3),
    (129, 33, 65, 0.5, INF),
    (200, 16, 131, 0.4, 1.2),
    (65, 5, 7, 0.3, INF),
]


@pytest.mark.parametrize("b, d, t, lc, uc", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_picks_match_cpu_kernel(b, d, t, lc, uc, dtype):
    x, labels, anchors = inputs(b, d, t, seed=b * 100 + d)
    x = x.to(dtype)
    got = E.distance_weighted_negatives(x, labels, anchors, lc, uc, 0, 17, 29, next_seed())
    want = C.distance_weighted_negatives(x, labels, anchors, lc, uc, 0, 17, 29)
    assert (got >= -1).all()  # every pick written (the output is poisoned with -7)
    # The kernels accumulate the cosines in another order than BLAS: picks may differ only
    # between candidates whose scores tie to ~1e-6.
    assert (got == want).double().mean() >= 0.99
    replay = oracle.replay(x, labels, anchors, 17, 29, lc, uc)
    assert (got == replay).double().mean() >= 0.99


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tensor_core_path_matches_cpu_kernel(dtype):
    """float16/bfloat16 (wmma tiles, CUDA only) against the CPU kernel on the same values."""
    x, labels, anchors = inputs(97, 40, 70, seed=3)
    xh = x.to(dtype)
    got = E.distance_weighted_negatives(xh, labels, anchors, 0.5, 1.4, 0, 5, 6, next_seed())
    # The rounded rows are off unit norm by ~1e-3: the CPU kernel takes them in float64,
    # renormalised, so its cosines differ slightly and near-ties may flip.
    want = C.distance_weighted_negatives(torch.nn.functional.normalize(xh.double(), dim=1), labels, anchors, 0.5, 1.4, 0, 5, 6)
    assert (got == want).double().mean() >= 0.95


def test_fallback_and_no_negative_rows():
    x, labels, anchors = inputs(90, 12, 40, seed=11, classes=4)
    labels[:10] = 7  # a class ...
    anchors[:3] = torch.tensor([0, 1, 2])
    # ... that is everything but one row: its anchors' only negative is that row
    one_class = labels.clone().fill_(7)
    one_class[50] = 8
    for lab, uc in ((labels, 0.6), (one_class, INF), (torch.zeros_like(labels), INF)):
        got = E.distance_weighted_negatives(x.float(), lab, anchors, 0.5, uc, 0, 8, 9, next_seed())
        want = C.distance_weighted_negatives(x.float(), lab, anchors, 0.5, uc, 0, 8, 9)
        assert torch.equal(got, want)
    assert (got == -1).all()  # all one class: no negatives at all


def test_results_do_not_depend_on_the_schedule():
    """No atomics: every interleaving gives the same picks."""
    x, labels, anchors = inputs(140, 20, 50, seed=5)
    outs = [E.distance_weighted_negatives(x.float(), labels, anchors, 0.5, 1.4, 0, 1, 2, s) for s in emulation.seeds(3)]
    assert all(torch.equal(o, outs[0]) for o in outs)


KERNELS = "csrc/cuda/distance_weighted_kernels.cuh"


@pytest.mark.parametrize("line", emulation.barrier_lines(KERNELS))
def test_removing_any_barrier_is_caught(line):
    """Mutation test: without any one of the kernels' __syncthreads(), the picks change or the
    launch fails (the correct kernels are schedule-independent)."""
    x, labels, anchors = inputs(130, 36, 70, seed=line)
    # Fallback rows over 300 samples: the finish kernel's block reductions span three warps.
    fx, flabels, fanchors = inputs(300, 8, 6, seed=line)

    def run(seed):
        out = [E.distance_weighted_negatives(x.to(dt), labels, anchors, 0.5, INF, 0, 3, 4, seed)
               for dt in (torch.float32, torch.float16)]
        # (upper_cutoff 0.05 leaves no candidate: lower_cutoff must not exceed it)
        return out + [E.distance_weighted_negatives(fx.float(), flabels, fanchors, 0.01, 0.05, 0, 3, 4, seed)]

    assert emulation.barrier_removal_is_caught(KERNELS, line, run), \
        f"removing the __syncthreads() at {KERNELS}:{line} went unnoticed"


def test_the_kernels_have_barriers_to_mutate():
    # (The tile loops' barriers are tile_mma.cuh's: test_cuda_emulation_tile_mma.py.)
    assert len(emulation.barrier_lines(KERNELS)) >= 3
