"""Mutation test of the tile product every CUDA kernel shares (csrc/cuda/tile_mma.cuh).

Removing any one of its __syncthreads() must change what one of the ops computes under the
CUDA emulation (the correct kernels are bitwise schedule-independent) or fail the launch. The
run covers both of its paths: CUDA cores (pairwise_distance, distance_weighted_negatives and
info_nce in float32) and tensor cores (distance_weighted_negatives and info_nce in float16).
Each op's own barriers are mutated by its test_cuda_emulation_<op>.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from diva_ext.testing import emulation

pytestmark = pytest.mark.cuda_emulated

E = emulation.load()
HEADER = "csrc/cuda/tile_mma.cuh"


def unit_rows(g, n, d):
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("line", emulation.barrier_lines(HEADER))
def test_removing_any_barrier_is_caught(line):
    g = torch.Generator().manual_seed(line)
    # Sizes past one 64-row tile and one 16-step, not multiples of either.
    x, y = torch.randn(70, 40, generator=g), torch.randn(67, 40, generator=g)
    xu = unit_rows(g, 130, 36)
    labels, anchors = torch.randint(0, 40, (130,), generator=g), torch.randint(0, 130, (70,), generator=g)
    q, queue = unit_rows(g, 33, 70), unit_rows(g, 70, 70)
    pos = F.normalize(q + 0.5 * torch.randn(33, 70, generator=g, dtype=torch.float64), dim=1)
    args = (0.05, "dance", 0.5, 1.4)

    def run(seed):
        out = [E.pairwise_distance(x, y, False, 1e-12, seed)]
        for dtype in (torch.float32, torch.float16):  # CUDA cores; tensor cores
            out.append(E.distance_weighted_negatives(xu.to(dtype), labels, anchors, 0.5, math.inf, 0, 3, 4, seed))
            out += list(E._info_nce_forward(q.to(dtype), pos.to(dtype), queue.to(dtype), *args, True, seed))
        return out

    assert emulation.barrier_removal_is_caught(HEADER, line, run, tries=8), (
        f"removing the __syncthreads() at {HEADER}:{line} went unnoticed"
    )


def test_the_tile_product_has_barriers_to_mutate():
    assert len(emulation.barrier_lines(HEADER)) >= 4
