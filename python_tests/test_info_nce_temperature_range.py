"""info_nce's range of temperatures: every path accepts T from the derived minimum on (and computes
it right there) and refuses a smaller T with one line naming ``temperature`` and the bound.

The minimum (csrc/include/diva_ext/info_nce_checks.h, diva_ext/_info_nce_temperature.py) is 2^e:
"none" needs lse - a (up to 2 / T for unit rows) finite in q's dtype, e = -126 in float32 and
-1022 in float64; "dance" also needs the online pass's offsets c t - m (up to half an ulp of
logits of size 1 / T, fed to exp) small, e = -30 in float32 and -61 in float64.

Before: weighting "dance" at T = 1e-11 in float32 raised "the logits overflowed although q, k and
queue are finite; their rows should be L2-normalised" (blaming the inputs), and `diva train
--temperature 1e-20` ended in "internal error"; "none" accepted any T > 0 (inf and NaN losses once
1 / T overflows float32).
"""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from diva_ext import losses, ops, reference
from diva_ext.testing import emulation
from diva_ext.training.config import TrainConfig

from info_nce_rows_error_model import info_nce_rows
from tolerances import SECOND_ORDER, assert_within, first_order_error_bound

C = torch.ops.diva_ext
# (dtype, weighting, e): the op accepts T >= 2^e.
RANGES = [
    (torch.float32, "none", -126),
    (torch.float32, "dance", -30),
    (torch.float64, "none", -1022),
    (torch.float64, "dance", -61),
]
IDS = [f"{str(d)[6:]}-{w}" for d, w, _ in RANGES]
# How the messages name q's dtype: Python's torch.float32, C++'s Float.
DTYPE_NAMES = {torch.float32: ("float32", "float"), torch.float64: ("float64", "double")}
CUTOFFS = dict(lower_cutoff=0.5, upper_cutoff=1.4)


def batch(generator, dtype, b=4, k=37, d=16):
    """Unit rows; one negative equal to a row's positive (a tie) and one equal to a query."""
    q, k_, queue = (F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1)
                    for n in (b, b, k))
    queue[0], queue[1] = k_[1], q[2]
    return q.to(dtype), k_.to(dtype), queue.to(dtype)


def below(e):
    """The largest double under 2^e."""
    return math.nextafter(math.ldexp(1.0, e), 0.0)


def cpu_forward(q, k, queue, temperature, weighting):
    return C._info_nce_forward(q, k, queue, temperature, weighting, 0.5, 1.4, False)[:2]


def emulated_forward(q, k, queue, temperature, weighting):
    e = emulation.load()
    return e._info_nce_forward(q, k, queue, temperature, weighting, 0.5, 1.4, False, emulation.base_seed())[:2]


def fake_forward(q, k, queue, temperature, weighting):
    with FakeTensorMode() as mode:
        return C.info_nce(*(mode.from_tensor(t) for t in (q, k, queue)), temperature, weighting, 0.5, 1.4)


def public_forward(q, k, queue, temperature, weighting):
    return ops.info_nce(q, k, queue, temperature=temperature, weighting=weighting, **CUTOFFS)


def reference_forward(q, k, queue, temperature, weighting):
    return reference.info_nce(q, k, queue, temperature=temperature, weighting=weighting, **CUTOFFS)


def loss_forward(q, k, queue, temperature, weighting):
    loss = losses.DaNCELoss(temperature, **CUTOFFS) if weighting == "dance" else losses.InfoNCELoss(temperature)
    return loss(q, k, queue)


PATHS = [
    pytest.param(cpu_forward, id="cpu"),
    pytest.param(emulated_forward, id="cuda-emulated", marks=pytest.mark.cuda_emulated),
    pytest.param(fake_forward, id="fake"),
    pytest.param(public_forward, id="ops"),
    pytest.param(reference_forward, id="reference"),
    pytest.param(loss_forward, id="loss"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype,weighting,e", RANGES, ids=IDS)
def test_temperature_below_the_range_is_refused_naming_it(path, dtype, weighting, e, generator):
    q, k, queue = batch(generator, dtype)
    for temperature in sorted({below(e), math.ldexp(1.0, e - 40), 1e-11, 1e-20, 1e-300, 5e-324}, reverse=True):
        if temperature >= math.ldexp(1.0, e):
            continue
        with pytest.raises((RuntimeError, ValueError)) as info:
            path(q, k, queue, temperature, weighting)
        line = str(info.value)
        assert "\n" not in line and f"temperature must be >= 2^{e}" in line, (temperature, line)
        assert any(name in line.lower() for name in DTYPE_NAMES[dtype]), line


def test_half_precision_range_on_the_cuda_kernels():
    """float16 results hold loss and lse up to 65504: T >= 2^-14 for both weightings (2 / T + log(K + 1)
    < 65504); bfloat16 has float32's range."""
    e = emulation.load()
    q, k, queue = batch(torch.Generator().manual_seed(0), torch.float16)
    for weighting in ("none", "dance"):
        with pytest.raises(RuntimeError, match=r"temperature must be >= 2\^-14"):
            e.info_nce(q, k, queue, below(-14), weighting, 0.5, 1.4, 0)
        loss, lse = e.info_nce(q, k, queue, 2.0**-14, weighting, 0.5, 1.4, 0)
        assert torch.isfinite(loss).all() and torch.isfinite(lse).all()
        with pytest.raises(RuntimeError, match=r"temperature must be >= 2\^-30"):
            e.info_nce(*(t.bfloat16() for t in (q, k, queue)), below(-30), "dance", 0.5, 1.4, 0)


def rows_bound(q, k, queue, dtype, **kw):
    """[2, B]: SECOND_ORDER x the first-order rounding bound of (loss_i, lse_i) in dtype (doubled for
    float64: the float64 oracle obeys the same model)."""
    rows = [first_order_error_bound(functools.partial(info_nce_rows, **kw), (q[i:i + 1], k[i:i + 1], queue), dtype)
            for i in range(q.shape[0])]
    bound = SECOND_ORDER * torch.cat(rows, 1)
    return 2 * bound if dtype == torch.float64 else bound


@pytest.mark.parametrize("forward", [PATHS[0], PATHS[1]])
@pytest.mark.parametrize("dtype,weighting,e", RANGES, ids=IDS)
def test_the_smallest_temperatures_compute_within_the_error_model(forward, dtype, weighting, e, generator):
    """At T = 2^e and 2^(e+1) loss and lse match the float64 formula of the same inputs within their
    rounding bound (logits of size 1 / T: the bound scales with it)."""
    q, k, queue = batch(generator, dtype)
    for temperature in (math.ldexp(1.0, e), math.ldexp(1.0, e + 1)):
        kw = dict(temperature=temperature, weighting=weighting, **CUTOFFS)
        loss, lse = forward(q, k, queue, temperature, weighting)
        want_loss, want_lse = reference.info_nce(q.double(), k.double(), queue.double(), **kw)
        bound = rows_bound(q, k, queue, dtype, **kw)
        assert_within(loss.double(), want_loss, bound[0], f"loss at T = 2^{e}")
        assert_within(lse.double(), want_lse, bound[1], f"lse at T = 2^{e}")


def test_train_config_refuses_what_the_dance_loss_cannot_run():
    """diva train runs DaNCE in float32: 2^-30 is accepted, anything smaller is one ValueError."""
    TrainConfig(temperature=2.0**-30).validate()
    for temperature in (below(-30), 1e-20, 1e-300):
        with pytest.raises(ValueError, match=r"temperature must be >= 2\^-30"):
            TrainConfig(temperature=temperature).validate()
