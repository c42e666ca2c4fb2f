"""The CUDA emulation itself: intrinsics have CUDA's semantics, and planted faults are caught.

The kernels are in csrc/emulation/selftest_kernels.cuh, run through
torch.ops.diva_ext_emulated.selftest(name, inputs, schedule_seed). Each planted fault is a
kernel with one classic GPU bug next to its correct twin: the twin passes on every schedule,
the faulty one fails (wrong result or RuntimeError), which proves the harness can fail.
"""

import math

import pytest
import torch

from diva_ext.testing import emulation

from tolerances import accumulation, assert_within, unit_roundoff

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
SEEDS = emulation.seeds(8)


def run(name, *inputs, seed=0):
    return E.selftest(name, list(inputs), seed)


def exact_sum(x):
    """The exact sum of float32 (or float64) values, rounded once to float64 (math.fsum)."""
    return torch.tensor(math.fsum(x.double().tolist()), dtype=torch.float64)


def sum_bound(x, dtype=torch.float32):
    # Any order, any tree (atomics, warp shuffles, tiles): n terms, each through <= n roundings.
    return accumulation(x.numel(), dtype) * x.double().abs().sum() + unit_roundoff(torch.float64) * x.double().abs().sum()


def sums_of(x, rows):
    """The exact sums of x's rows [rows, n] and their bounds."""
    parts = x.view(rows, -1)
    return torch.stack([exact_sum(p) for p in parts]), torch.stack([sum_bound(p) for p in parts])


def is_wrong(out, want, bound):
    """True when some element lies beyond its rounding bound: a planted fault, not rounding."""
    return bool(((out.double() - want).abs() > bound).any())


@pytest.fixture
def x256():
    return torch.randn(256, generator=torch.Generator().manual_seed(0))


# ---- Intrinsics ----------------------------------------------------------------------------


def shuffle_sources(lane):
    """Source lane of each of shuffles_kernel's 4 rows (CUDA semantics, widths 32 and 16)."""
    down5 = lane + 5 if lane + 5 < 32 else lane
    seg16 = lane & ~15
    down2_w16 = lane + 2 if lane + 2 < seg16 + 16 else lane
    return [lane ^ 9, lane ^ 2, down5, down2_w16]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shuffles(dtype):
    x = torch.randn(64, dtype=dtype)
    for seed in SEEDS[:2]:
        (out,) = run("shuffles", x, seed=seed)
        want = torch.empty(4, 64, dtype=dtype)
        for i in range(64):
            base = i - i % 32
            for r, src in enumerate(shuffle_sources(i % 32)):
                want[r, i] = x[base + src]
        torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_conversions_and_single_roundings():
    x = torch.rand(100) * 4 + 0.01
    (out,) = run("conversions", x)
    assert torch.equal(out[0], x.half().float()) and torch.equal(out[1], x.bfloat16().float())
    # x * 3 and x + 1 are exact in float64, so one rounding to float32 is their float32 value.
    xd = x.double()
    assert torch.equal(out[2], (xd * 3).float()) and torch.equal(out[3], (xd + 1).float())
    # The fma rounds x * x + 1 once: within half an ulp of the float64 value (itself within
    # 2^-53 relative of the exact one).
    torch.testing.assert_close(out[4].double(), xd * xd + 1, rtol=2**-24 + 2**-52, atol=0)


@pytest.mark.parametrize(
    "case, dtype",
    [("wmma_half", torch.float16), ("wmma_half_col_major", torch.float16), ("wmma_bf16", torch.bfloat16)],
)
def test_wmma_matches_matmul(case, dtype):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)
    (d,) = run(case, a, b)
    ad, bd = a.to(dtype).double(), b.to(dtype).double()
    # Products of half / bf16 values are exact in float; the 16 float additions round each by at
    # most 2^-24 of a partial sum, itself at most the sum of |products|.
    bound = 16 * 2**-24 * (ad.abs() @ bd.abs())
    assert ((d.double() - ad @ bd).abs() <= bound).all()


def test_schedule_seed_changes_interleaving_not_correct_results(x256):
    """Correct kernels give the same result under every schedule."""
    results = [run("tile_sum", x256, seed=s)[0] for s in SEEDS]
    assert all(torch.equal(r, results[0]) for r in results)


# ---- Planted faults ------------------------------------------------------------------------

# name: (expected result and its rounding bound from x256, how many of the 8 seeds must expose
# the fault).
WRONG_RESULT_FAULTS = {
    # Missing barrier between writing and reading a tile (read-after-write race): a thread reads
    # the tile right after its own write, with no yield point in between, so every schedule
    # shows it (observed: 200 of 200 seeds). A permutation: exact.
    "reverse": (lambda x: (x.view(-1, 64).flip(1).reshape(-1).double(), torch.zeros(())), 8),
    # Missing barrier at the end of a tile loop (write-after-read race): 200 of 200 seeds.
    "tile_sum": (lambda x: (exact_sum(x).expand(64), sum_bound(x)), 8),
}


@pytest.mark.parametrize("name", sorted(WRONG_RESULT_FAULTS))
def test_planted_race_gives_wrong_results(name, x256):
    expected, min_caught = WRONG_RESULT_FAULTS[name]
    want, bound = expected(x256)
    for seed in SEEDS:
        (good,) = run(name, x256, seed=seed)
        assert_within(good, want, bound, name)
    wrong = [seed for seed in SEEDS if is_wrong(run(name + "_fault", x256, seed=seed)[0], want, bound)]
    assert len(wrong) >= min_caught, f"{name}_fault gave the correct result under seeds {sorted(set(SEEDS) - set(wrong))}"


@pytest.mark.parametrize("fault", ["warp_sum_fault_offset", "warp_sum_fault_butterfly"])
def test_planted_wrong_warp_reduction_gives_wrong_results(fault, x256):
    want, bound = sums_of(x256, 8)
    assert_within(run("warp_sum", x256)[0], want, bound, "warp_sum")
    for seed in SEEDS[:2]:
        (out,) = run(fault, x256, seed=seed)
        assert is_wrong(out, want, bound)


# name: (input length, the error message's key phrases)
ERROR_FAULTS = {
    "scale_fault": (256, ["out-of-bounds access to 'out'", "element 256 of 256"]),
    "shared_rotate_fault": (256, ["out-of-bounds index 64", "float [64]", "selftest_kernels.cuh"]),
    "dynamic_rotate_fault": (256, ["out-of-bounds access to 'dynamic shared memory'", "element 64 of 64"]),
    "warp_sum_fault_mask": (256, ["__shfl_down_sync(mask 0x0000ffff)", "does not name the calling lane"]),
    "divergent_barrier_fault": (64, ["divergent barrier", "__syncthreads()"]),
    "warp_deadlock_fault": (64, ["deadlock", "__shfl_xor_sync(mask 0xffffffff)", "wait in __syncthreads()"]),
}


@pytest.mark.parametrize("fault", sorted(ERROR_FAULTS))
def test_planted_fault_raises(fault, x256):
    length, phrases = ERROR_FAULTS[fault]
    good = fault.replace("_fault_mask", "").replace("_fault", "")
    if good in E.selftest_cases():
        run(good, x256[:length])  # the correct twin runs cleanly
    for seed in SEEDS[:3]:
        with pytest.raises(RuntimeError) as info:
            run(fault, x256[:length], seed=seed)
        message = str(info.value)
        for phrase in phrases:
            assert phrase in message, message
        assert f"schedule seed {seed}" in message  # the message says how to reproduce it


def test_planted_inter_block_spin_fails_instead_of_hanging():
    with pytest.raises(RuntimeError, match="spin-wait that never ends"):
        run("inter_block_spin_fault", torch.zeros(1))


def test_launch_errors_are_python_exceptions():
    with pytest.raises(RuntimeError, match="unknown case"):
        run("no_such_kernel", torch.zeros(1))
    # An empty grid is an invalid configuration on a GPU, and here.
    with pytest.raises(RuntimeError, match="invalid configuration"):
        run("reverse", torch.zeros(0))
