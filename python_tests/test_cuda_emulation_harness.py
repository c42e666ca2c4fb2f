"""The CUDA emulation itself: intrinsics have CUDA's semantics, and planted faults are caught.

The kernels are in csrc/emulation/selftest_kernels.cuh, run through
torch.ops.diva_ext_emulated.selftest(name, inputs, schedule_seed). Each planted fault is a
kernel with one classic GPU bug next to its correct twin: the twin passes on every schedule,
the faulty one fails (wrong result or RuntimeError), which proves the harness can fail.
"""

import pytest
import torch

from diva_ext.testing import emulation

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
SEEDS = emulation.seeds(8)


def run(name, *inputs, seed=0):
    return E.selftest(name, list(inputs), seed)


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
        torch.testing.assert_close(f[0], x.sum(), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(d[0], x.double().sum(), rtol=1e-12, atol=1e-9)
        q = torch.floor(x * 100).int()
        assert k.tolist() == [int((x > 0).sum()), int(q.max()), int(q.min())]
        assert u.item() == 200 and w.item() == 200
        assert f[1] == x.max()
        assert (x == f[2]).any()


def test_fast_math_and_conversions():
    x = torch.rand(100) * 4 + 0.01
    (out,) = run("fast_math", x)
    want = [
        x.exp(), x.log(), x.rsqrt(), x / 3, x * x + 1, torch.exp2(x), torch.log2(x),
        (x - 1).clamp(0, 1), torch.round(x * 10), x.clamp(max=1) + x.clamp(min=2),
        x.half().float(), x.bfloat16().float(), x,
    ]
    for row, w in zip(out, want):
        torch.testing.assert_close(row, w, rtol=1e-6, atol=1e-6)


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
    want = 2 * (a.to(dtype).double() @ b.to(dtype).double() + c.double())
    torch.testing.assert_close(d.double(), want, rtol=1e-5, atol=1e-5)


def test_wmma_tf32_matches_matmul():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 8, generator=g), torch.randn(8, 16, generator=g)
    (d,) = run("wmma_tf32", a, b)
    want = tf32(a).double() @ tf32(b).double()
    torch.testing.assert_close(d.double(), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(d.double(), a.double() @ b.double(), rtol=1e-6, atol=1e-6)  # rounded


def test_schedule_seed_changes_interleaving_not_correct_results(x256):
    """Correct kernels give the same result under every schedule (sum: up to float order)."""
    results = [run("tile_sum", x256, seed=s)[0] for s in SEEDS]
    assert all(torch.equal(r, results[0]) for r in results)
    sums = torch.stack([run("sum", x256, seed=s)[0] for s in SEEDS])
    torch.testing.assert_close(sums, x256.sum().expand(len(SEEDS), 1), rtol=1e-5, atol=1e-4)


# ---- Planted faults ------------------------------------------------------------------------

# name: (expected result from x256, how many of the 8 seeds must expose the fault).
WRONG_RESULT_FAULTS = {
    # Missing barrier between writing and reading a tile (read-after-write race): a thread reads
    # the tile right after its own write, with no yield point in between, so every schedule
    # shows it (observed: 200 of 200 seeds).
    "reverse": (lambda x: x.view(-1, 64).flip(1).reshape(-1), 8),
    # Missing barrier at the end of a tile loop (write-after-read race): 200 of 200 seeds.
    "tile_sum": (lambda x: x.sum().expand(64), 8),
    # A plain read-modify-write instead of atomicAdd: a lost update needs a yield between the
    # read and the write, which one schedule in four never makes (observed: 146 of 200 seeds).
    "sum": (lambda x: x.sum().view(1), 1),
}


@pytest.mark.parametrize("name", sorted(WRONG_RESULT_FAULTS))
def test_planted_race_gives_wrong_results(name, x256):
    expected, min_caught = WRONG_RESULT_FAULTS[name]
    want = expected(x256)
    for seed in SEEDS:
        (good,) = run(name, x256, seed=seed)
        torch.testing.assert_close(good, want, rtol=1e-5, atol=1e-4)
    wrong = [seed for seed in SEEDS if not torch.allclose(run(name + "_fault", x256, seed=seed)[0], want, atol=1e-4)]
    assert len(wrong) >= min_caught, f"{name}_fault gave the correct result under seeds {sorted(set(SEEDS) - set(wrong))}"


@pytest.mark.parametrize("fault", ["warp_sum_fault_offset", "warp_sum_fault_butterfly"])
def test_planted_wrong_warp_reduction_gives_wrong_results(fault, x256):
    want = x256.view(-1, 32).sum(1)
    torch.testing.assert_close(run("warp_sum", x256)[0], want, rtol=1e-5, atol=1e-5)
    for seed in SEEDS[:2]:
        (out,) = run(fault, x256, seed=seed)
        assert not torch.allclose(out, want, atol=1e-3)


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
        torch.testing.assert_close(out, x256.sum().view(1), rtol=1e-5, atol=1e-4)


def test_planted_inter_block_spin_fails_instead_of_hanging():
    with pytest.raises(RuntimeError, match="spin-wait that never ends"):
        run("inter_block_spin_fault", torch.zeros(1))


def test_launch_errors_are_python_exceptions():
    with pytest.raises(RuntimeError, match="unknown case"):
        run("no_such_kernel", torch.zeros(1))
    # An empty grid is an invalid configuration on a GPU, and here.
    with pytest.raises(RuntimeError, match="invalid configuration"):
        run("reverse", torch.zeros(0))
