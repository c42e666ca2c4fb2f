"""distance_weighted_negatives rejects argument combinations it cannot honour, naming them, on the
CPU kernel, the CUDA kernel (through the CUDA emulation) and the fake kernel (torch.compile's
view), like info_nce does:

- lower_cutoff > upper_cutoff (before: accepted, although no distance can be both clamped up to
  lower_cutoff and kept below upper_cutoff in a meaningful way; info_nce rejects it);
- dim = 1 (the weight is the inverse density of distances on the (n-1)-sphere: n >= 2);
- a dim that is not an integer (before: int(2.7) = 2 silently).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from diva_ext import ops
from diva_ext.testing import emulation


def batch(generator):
    x = F.normalize(torch.randn(6, 4, generator=generator), dim=1)
    return x, torch.arange(6) % 3, torch.arange(6)


def cpu_op(x, labels, anchors, lower, upper, dim):
    return torch.ops.diva_ext.distance_weighted_negatives(x, labels, anchors, lower, upper, dim, 1, 2)


def emulated_op(x, labels, anchors, lower, upper, dim):
    return emulation.load().distance_weighted_negatives(x, labels, anchors, lower, upper, dim, 1, 2, 0)


def fake_op(x, labels, anchors, lower, upper, dim):
    with FakeTensorMode() as mode:
        fx, fl, fa = (mode.from_tensor(t) for t in (x, labels, anchors))
        return torch.ops.diva_ext.distance_weighted_negatives(fx, fl, fa, lower, upper, dim, 1, 2)


BACKENDS = [
    pytest.param(cpu_op, id="cpu"),
    pytest.param(emulated_op, id="cuda-emulated", marks=pytest.mark.cuda_emulated),
    pytest.param(fake_op, id="fake"),
]


@pytest.mark.parametrize("op", BACKENDS)
@pytest.mark.parametrize(
    "lower,upper,dim,pattern",
    [
        (1.2, 0.8, 0, r"upper_cutoff must be >= lower_cutoff \(1\.2"),
        (0.5, 0.4999, 0, r"upper_cutoff must be >= lower_cutoff"),
        (0.5, math.nan, 0, r"upper_cutoff must be"),
        (-0.1, 1.0, 0, r"lower_cutoff must be finite and > 0"),
        (math.nan, 1.0, 0, r"lower_cutoff must be finite and > 0"),
        (0.5, -1.0, 0, r"upper_cutoff must be > 0"),
        (0.5, 1.0, 1, r"dim must be 0 \(meaning x.size\(1\)\) or >= 2, got 1"),
        (0.5, 1.0, -2, r"dim must be >= 0"),
    ],
)
def test_bad_scalar_combinations_name_the_argument(op, lower, upper, dim, pattern, generator):
    with pytest.raises(RuntimeError, match=pattern):
        op(*batch(generator), lower, upper, dim)


@pytest.mark.parametrize("op", BACKENDS)
@pytest.mark.parametrize("lower,upper,dim", [(0.5, 0.5, 0), (0.5, math.inf, 2), (0.3, 1.9, 7)])
def test_limits_are_accepted(op, lower, upper, dim, generator):
    out = op(*batch(generator), lower, upper, dim)
    assert out.shape == (6,)


@pytest.mark.parametrize("dim", [2.7, 2.0, "3", True])
def test_wrapper_rejects_a_dim_that_is_not_an_integer(dim, generator):
    with pytest.raises(TypeError, match=r"distance_weighted_negatives: dim must be an integer or None"):
        ops.distance_weighted_negatives(*batch(generator), dim=dim)


def test_wrapper_accepts_integer_like_dims(generator):
    x, labels, anchors = batch(generator)
    for dim in (None, 3, torch.tensor(3).item()):  # 0 is refused (test_distance_weighted_dim_and_empty)
        assert ops.distance_weighted_negatives(x, labels, anchors, dim=dim).shape == (6,)
