"""Smoke test of an installed diva_ext (scripts/wheel_ci.sh runs it against the wheel in a fresh
environment; the suite runs it against the in-place build): the package imports, its compiled
library is the one beside it, and the three operators on the CPU agree with diva_ext.reference.

Tolerances come from the rounding-error models the op tests use; the distance-weighted draws are
compared as distributions (the reference draws other samples from the same distribution).
"""

import functools
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import diva_ext
from diva_ext import ops, reference

from info_nce_rows_error_model import info_nce_rows
from pairwise_distance_error_model import distance_error_bound
from tolerances import FAILURE, SECOND_ORDER, assert_within, first_order_error_bound


def test_imports_the_installed_package():
    package = Path(diva_ext.__file__).resolve().parent
    compiled = [p.name for p in package.glob("_C.*") if p.suffix in (".so", ".pyd")]
    assert compiled, f"no compiled library beside {package}"
    expected = os.environ.get("DIVA_EXPECT_PACKAGE_UNDER")  # set by scripts/wheel_ci.sh
    if expected:
        assert package.is_relative_to(Path(expected).resolve()), f"imported {package}, not the one under {expected}"
    for op in ("pairwise_distance", "info_nce", "distance_weighted_negatives"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"diva_ext::{op}", "CPU"), op


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_distance_matches_reference(dtype, generator):
    x = torch.randn(37, 19, generator=generator, dtype=torch.float64)
    y = torch.randn(23, 19, generator=generator, dtype=torch.float64)
    for squared in (False, True):
        got = ops.pairwise_distance(x.to(dtype), y.to(dtype), squared=squared)
        want = reference.pairwise_distance(x.to(dtype).double(), y.to(dtype).double(), squared=squared)
        bound = distance_error_bound(x.to(dtype), y.to(dtype), squared=squared)
        assert_within(got.double(), want, bound, f"pairwise_distance {dtype} squared={squared}")


@pytest.mark.parametrize("weighting", ["none", "dance"])
def test_info_nce_matches_reference(weighting, generator):
    unit = functools.partial(F.normalize, dim=1)
    q = unit(torch.randn(5, 16, generator=generator, dtype=torch.float64))
    k = unit(q + 0.5 * torch.randn(5, 16, generator=generator, dtype=torch.float64))
    queue = unit(torch.randn(67, 16, generator=generator, dtype=torch.float64))
    kw = dict(temperature=0.1, weighting=weighting)
    loss, lse = ops.info_nce(q, k, queue, **kw)
    want_loss, want_lse = reference.info_nce(q, k, queue, **kw)
    # Per row, the first-order rounding bound of (loss_i, lse_i) computed in float32, twice (ours
    # and the reference's): every float64 rounding is below its float32 counterpart, so it bounds
    # both float64 computations, loosely (about 1e-6 relative: a smoke test; test_info_nce.py
    # holds the tight float64 comparisons).
    rows = [first_order_error_bound(functools.partial(info_nce_rows, **kw), (q[i:i + 1], k[i:i + 1], queue),
                                    torch.float32) for i in range(q.shape[0])]
    bound = 2 * SECOND_ORDER * torch.cat(rows, 1)
    assert_within(loss, want_loss, bound[0], f"info_nce loss ({weighting})")
    assert_within(lse, want_lse, bound[1], f"info_nce lse ({weighting})")


def test_distance_weighted_negatives_matches_reference_distribution(generator):
    # Anchor 0 drawn n times (repeated anchors draw anew), by the op and by the reference. Each
    # candidate's frequency in either sample is within eps of its probability except with
    # probability FAILURE (Hoeffding, union over candidates and both samples), so the two
    # frequencies differ by at most 2 eps (0.04 here). The 8 negatives sit at chosen distances
    # from the anchor, in random directions: their probabilities span 0.04 to 0.28 (uniform would
    # be 0.125), so a pick that ignores the weights fails.
    d = 4
    anchor = F.normalize(torch.randn(d, generator=generator, dtype=torch.float64), dim=0)
    distances = torch.tensor([0.3, 0.7, 1.0, 1.3, 1.6, 1.9, 0.5, 1.2], dtype=torch.float64)
    side = torch.randn(len(distances), d, generator=generator, dtype=torch.float64)
    side = F.normalize(side - (side @ anchor)[:, None] * anchor, dim=1)
    theta = 2 * torch.asin(distances / 2)
    negatives = torch.cos(theta)[:, None] * anchor + torch.sin(theta)[:, None] * side
    positives = F.normalize(torch.randn(3, d, generator=generator, dtype=torch.float64), dim=1)
    x = torch.cat([anchor[None], positives, negatives])
    labels = torch.cat([torch.zeros(4, dtype=torch.int64), torch.arange(len(distances)) % 3 + 1])
    anchors = torch.zeros(20000, dtype=torch.int64)
    seeds = torch.randint(0, 2**31, (2,), generator=generator).tolist()
    fused = ops.distance_weighted_negatives(x, labels, anchors, generator=torch.Generator().manual_seed(seeds[0]))
    ref = reference.distance_weighted_negatives(x, labels, anchors, generator=torch.Generator().manual_seed(seeds[1]))
    assert bool((labels[fused] != 0).all()), "a negative shares the anchor's label"
    eps = math.sqrt(math.log(2 * 2 * len(distances) / FAILURE) / (2 * anchors.numel()))
    freq_fused = torch.bincount(fused, minlength=len(x)).double() / anchors.numel()
    freq_ref = torch.bincount(ref, minlength=len(x)).double() / anchors.numel()
    assert (freq_fused - freq_ref).abs().max() <= 2 * eps, (freq_fused, freq_ref, 2 * eps)
