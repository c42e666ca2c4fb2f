"""info_nce's memory claim (docs/design.md §2.3), measured: at B=512, K=65536, D=128 a forward+backward
pass allocates under 10% of what the explicit-logits version (MoCo's einsum + cat +
cross_entropy) allocates.

Measure: the peak of the CPU allocator's live bytes over the pass, from torch.profiler's memory
events (profile_memory=True). The profiler records allocations of the calling thread only, so the
pass runs with one intra-op thread: every buffer of the fused kernel (the per-thread tiles too)
is then allocated on the recorded thread.
"""

import json
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from diva_ext import ops, reference

B, K, D = 512, 65536, 128


def peak_allocated_bytes(fn):
    """Peak of live CPU allocator bytes during fn() above the level before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    assert memory, "the profiler recorded no allocations"
    live = peak = 0
    for e in memory:
        live += e["args"]["Bytes"]
        peak = max(peak, live)
    return peak


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_forward_backward_allocates_under_a_tenth_of_explicit_logits(one_thread):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    k = F.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(K, D, generator=g), dim=1)

    def step(fn):
        def run():
            loss, _ = fn(q, k, queue, temperature=0.07)
            loss.mean().backward()

        return run

    explicit = peak_allocated_bytes(step(reference.info_nce))
    fused = peak_allocated_bytes(step(ops.info_nce))
    # The explicit version holds at least the [B, K+1] float32 logits.
    assert explicit >= B * (K + 1) * 4
    assert fused < 0.1 * explicit, f"fused {fused / 2**20:.1f} MiB vs explicit {explicit / 2**20:.1f} MiB"
    # And what the fused pass does hold is O(B * D + tile), not O(B * K).
    assert fused < 16 * B * D * 4 + (2 << 20)
