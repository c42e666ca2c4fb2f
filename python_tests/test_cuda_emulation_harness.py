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

from tolerances import accumulation, assert_within, gamma, unit_roundoff

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
    """Source lane of each of shuffles_kernel's 7 rows (CUDA semantics, widths 32/8/16/4)."""

    def seg(width):
        return lane & ~(width - 1)

    up3 = lane - 3 if lane >= 3 else lane
    down5 = lane + 5 if lane + 5 < 32 else lane
    down2_w16 = lane + 2 if lane + 2 < seg(16) + 16 else lane
    up1_w4 = lane - 1 if lane - 1 >= seg(4) else lane
    return [(lane * 7 + 3) % 32, seg(8) + (lane + 5) % 8, up3, down5, lane ^ 9, down2_w16, up1_w4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shuffles(dtype):
    x = torch.randn(64, dtype=dtype)
    for seed in SEEDS[:2]:
        (out,) = run("shuffles", x, seed=seed)
        want = torch.empty(7, 64, dtype=dtype)
        for i in range(64):
            base = i - i % 32
            for r, src in enumerate(shuffle_sources(i % 32)):
                want[r, i] = x[base + src]
        torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_votes_and_activemask():
    # Warp 0: mixed signs; warp 1: all positive; warp 2: all negative, lanes 5 and 20 < -1.
    x = torch.cat([torch.randn(32), torch.rand(32) + 0.5, -torch.rand(32) - 0.1])
    x[64 + 5] = x[64 + 20] = -2.0
    x[7] = -3.0
    (out,) = run("votes", x)
    pos = (x > 0).view(3, 32)
    for w in range(3):
        ballot = sum(1 << lane for lane in range(32) if pos[w, lane])
        even = sum(1 << lane for lane in range(0, 32, 2) if pos[w, lane])
        active = sum(1 << lane for lane in range(32) if x[32 * w + lane] >= -1)
        lanes = slice(32 * w, 32 * w + 32)
        assert (out[0, lanes] == ballot).all()
        assert (out[1, lanes] == int(pos[w].any())).all()
        assert (out[2, lanes] == int(pos[w].all())).all()
        assert (out[3, lanes][0::2] == even).all() and (out[3, lanes][1::2] == 0).all()
        returned = x[lanes] < -1
        assert (out[4, lanes][~returned] == active).all() and (out[4, lanes][returned] == -1).all()


def test_block_votes():
    x = torch.cat([torch.rand(96) + 0.1, -torch.rand(96), torch.randn(96)])
    (out,) = run("block_votes", x)
    pos = (x > 0).view(3, 96)
    want = torch.stack([pos.sum(1), pos.all(1), pos.any(1)], 1).int()
    assert torch.equal(out, want)


def test_atomics():
    x = torch.randn(200)
    for seed in SEEDS[:4]:
        f, d, k, u, w = run("atomics", x, seed=seed)
        assert_within(f[0], exact_sum(x), sum_bound(x), "float atomicAdd")
        assert_within(d[0], exact_sum(x), sum_bound(x, torch.float64), "double atomicAdd")
        q = torch.floor(x * 100).int()
        assert k.tolist() == [int((x > 0).sum()), int(q.max()), int(q.min())]
        assert u.item() == 200 and w.item() == 200
        assert f[1] == x.max()
        assert (x == f[2]).any()


def test_fast_math_and_conversions():
    x = torch.rand(100) * 4 + 0.01
    (out,) = run("fast_math", x)
    d = x.double()
    u = unit_roundoff(torch.float32)
    # (float64 value, relative bound): libm's exp/log/exp2/log2 within 1 ulp (2u); rsqrtf as
    # 1 / sqrt, two correct roundings (gamma_2); one correct rounding (u) for /, fma, -, +.
    # Rounding to an integer and the conversions round to nearest even like torch: exact.
    want = [
        (d.exp(), 2 * u), (d.log(), 2 * u), (d.rsqrt(), gamma(2)), (d / 3, u), (d * d + 1, u),
        (torch.exp2(d), 2 * u), (torch.log2(d), 2 * u), ((d - 1).clamp(0, 1), u),
        (torch.round(x * 10).double(), 0.0), (x.clamp(max=1).double() + x.clamp(min=2).double(), u),
        (x.half().double(), 0.0), (x.bfloat16().double(), 0.0), (d, 0.0),
    ]
    for i, (row, (w, rel)) in enumerate(zip(out, want)):
        assert_within(row, w, rel * w.abs(), f"row {i}")


def tf32(t):
    """Rounds float32 to tf32 (10 mantissa bits, nearest even), like __float_to_tf32."""
    b = t.contiguous().view(torch.int32)
    b = (b + 0xFFF + ((b >> 13) & 1)) & ~0x1FFF
    return b.view(torch.float32)


@pytest.mark.parametrize(
    "case, dtype, mnk",
    [
        ("wmma_half", torch.float16, (16, 16, 16)),
        ("wmma_half_col_major", torch.float16, (16, 16, 16)),
        ("wmma_bf16", torch.bfloat16, (16, 16, 16)),
        ("wmma_half_32x8x16", torch.float16, (32, 8, 16)),
    ],
)
def test_wmma_matches_matmul(case, dtype, mnk):
    m, n, k = mnk
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g), torch.randn(m, n, generator=g)
    (d,) = run(case, a, b, c)
    a, b = a.to(dtype).double(), b.to(dtype).double()
    want = 2 * (a @ b + c.double())
    # Half/bf16 products are exact in float32; the k products and c summed in float32, any order.
    bound = 2 * accumulation(k + 1) * (a.abs() @ b.abs() + c.double().abs())
    assert_within(d, want, bound, case)


def test_wmma_tf32_matches_matmul():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 8, generator=g), torch.randn(8, 16, generator=g)
    (d,) = run("wmma_tf32", a, b)
    want = tf32(a).double() @ tf32(b).double()
    bound = accumulation(8) * (tf32(a).double().abs() @ tf32(b).double().abs())
    assert_within(d, want, bound, "tf32")
    assert is_wrong(d, a.double() @ b.double(), bound)  # the inputs were rounded to tf32


def test_schedule_seed_changes_interleaving_not_correct_results(x256):
    """Correct kernels give the same result under every schedule (sum: up to float order)."""
    results = [run("tile_sum", x256, seed=s)[0] for s in SEEDS]
    assert all(torch.equal(r, results[0]) for r in results)
    sums = torch.stack([run("sum", x256, seed=s)[0] for s in SEEDS])
    assert_within(sums, exact_sum(x256).expand(len(SEEDS), 1), sum_bound(x256), "sum")


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
    # A plain read-modify-write instead of atomicAdd: a lost update needs a yield between the
    # read and the write, which one schedule in four never makes (observed: 146 of 200 seeds).
    "sum": (lambda x: (exact_sum(x).view(1), sum_bound(x)), 1),
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


def test_spin_lock_progresses_under_every_schedule(x256):
    for seed in SEEDS[:4]:
        (out,) = run("spin_lock_sum", x256, seed=seed)
        assert_within(out, exact_sum(x256).view(1), sum_bound(x256), "spin_lock_sum")


def test_planted_inter_block_spin_fails_instead_of_hanging():
    with pytest.raises(RuntimeError, match="spin-wait that never ends"):
        run("inter_block_spin_fault", torch.zeros(1))


def test_launch_errors_are_python_exceptions():
    with pytest.raises(RuntimeError, match="unknown case"):
        run("no_such_kernel", torch.zeros(1))
    # An empty grid is an invalid configuration on a GPU, and here.
    with pytest.raises(RuntimeError, match="invalid configuration"):
        run("reverse", torch.zeros(0))
