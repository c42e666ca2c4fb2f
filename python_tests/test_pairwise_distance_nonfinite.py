"""pairwise_distance rejects NaN and inf inputs, naming the argument, on the CPU kernel and on
the CUDA kernel (run through the CUDA emulation), like distance_weighted_negatives and info_nce.

Before the fix a row with a NaN came out as distances ~1e-6 (the clamp mapped NaN to 0), and a
row with an inf gave inf against some rows and 1e-6 against others (not even symmetric).
"""

import math

import pytest
import torch

from diva_ext import ops
from diva_ext.testing import emulation

DTYPES = [torch.float32, torch.float64]
BAD = [math.nan, math.inf, -math.inf]


def cpu_op(x, y, squared):
    return ops.pairwise_distance(x, y, squared=squared)


def emulated_op(x, y, squared):
    return emulation.load().pairwise_distance(x, y, squared, 1e-12, emulation.base_seed())


BACKENDS = [
    pytest.param(cpu_op, id="cpu"),
    pytest.param(emulated_op, id="cuda-emulated", marks=pytest.mark.cuda_emulated),
]


def poisoned(n, d, dtype, value, generator):
    """[n, d] normal entries with `value` at a random position."""
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    flat = int(torch.randint(0, n * d, (1,), generator=generator))
    x.view(-1)[flat] = value
    return x


@pytest.mark.parametrize("op", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("squared", [False, True])
def test_non_finite_is_rejected_naming_the_argument(op, dtype, value, squared, generator):
    n, m, d = 67, 5, 17  # n straddles the CUDA kernel's 64-row tile
    good_x = torch.randn(n, d, generator=generator, dtype=dtype)
    good_y = torch.randn(m, d, generator=generator, dtype=dtype)
    bad_x = poisoned(n, d, dtype, value, generator)
    bad_y = poisoned(m, d, dtype, value, generator)
    with pytest.raises(RuntimeError, match=r"pairwise_distance: x must be finite.*NaN or inf"):
        op(bad_x, None, squared)
    with pytest.raises(RuntimeError, match=r"pairwise_distance: x must be finite"):
        op(bad_x, good_y, squared)
    with pytest.raises(RuntimeError, match=r"pairwise_distance: y must be finite"):
        op(good_x, bad_y, squared)


@pytest.mark.parametrize("op", BACKENDS)
def test_finite_inputs_still_pass(op, generator):
    """The check looks at the values, not at the output: a zero distance and a row of zeros
    (the clamp's territory) are fine."""
    x = torch.randn(9, 4, generator=generator)
    x[3] = 0
    out = op(x, x.clone(), False)
    assert torch.isfinite(out).all()


def test_gradient_path_rejects_too(generator):
    x = poisoned(6, 3, torch.float64, math.nan, generator).requires_grad_()
    with pytest.raises(RuntimeError, match=r"pairwise_distance: x must be finite"):
        ops.pairwise_distance(x)
