"""pairwise_distance over the whole finite range of its dtype: huge rows (whose squared norms
overflow), tiny rows (whose squares underflow) and both mixed with ordinary rows in one call,
on the CPU kernel and on the CUDA kernel (through the CUDA emulation).

Before the fix two float32 points 5e19 apart came out 1e-6 apart: |x|^2 + |y|^2 - 2<x, y>
overflowed to inf - inf = NaN, which the clamp turned into 0.

Oracle: exact decimal arithmetic on the inputs' values (50 digits, no overflow or underflow),
independent of float64 (which itself overflows for float64 inputs beyond ~1e154).
Error model, per entry: both the norm expansion (used where s >= 1e-3 (|x|^2 + |y|^2)) and the
direct difference have |s_got - s| <= c * D * u * (|x|^2 + |y|^2) with u the unit roundoff, and
|d_got - d| = |s_got - s| / (d_got + d) for the distance. Relative to the pair's own norms: a
pair of ordinary rows must be as accurate as in a call without the huge ones.
"""

import decimal
import math

import pytest
import torch

from diva_ext import ops
from diva_ext.testing import emulation

decimal.getcontext().prec = 50
D = decimal.Decimal
DTYPES = [torch.float32, torch.float64]
# Growth factor of the error model: a sum of D terms (gamma_D), the expansion's three terms
# and the final square root / rounding to the output type.
C_MODEL = 8


def cpu_op(x, y, squared, eps):
    return ops.pairwise_distance(x, y, squared=squared, eps=eps)


def emulated_op(x, y, squared, eps):
    return emulation.load().pairwise_distance(x, y, squared, eps, emulation.base_seed())


BACKENDS = [
    pytest.param(cpu_op, id="cpu"),
    pytest.param(emulated_op, id="cuda-emulated", marks=pytest.mark.cuda_emulated),
]


def scales(dtype):
    """Row magnitudes around the dtype's limits: huge (squares overflow), ordinary, tiny
    (squares underflow); all follow from finfo, none is a magic number."""
    fi = torch.finfo(dtype)
    huge = math.sqrt(fi.max)  # |x|^2 overflows from here on
    tiny = math.sqrt(fi.tiny)  # |x|^2 is subnormal from here down
    return {
        "huge": [huge * 4, huge * 64, fi.max ** 0.75],
        "ordinary": [1.0, 3.0],
        "tiny": [tiny / 4, tiny * fi.eps, tiny * 2**-6],
    }


def mixed_rows(n, d, dtype, kinds, generator):
    """n random rows, each scaled by a magnitude of one of `kinds` (see scales)."""
    mags = torch.tensor([m for k in kinds for m in scales(dtype)[k]], dtype=torch.float64)
    pick = torch.randint(0, len(mags), (n, 1), generator=generator)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)  # |entries| < 10: stays finite
    return (x * mags[pick]).to(dtype)


def exact_squared(x, y):
    """Exact squared distances and squared norms (Decimal lists) of the rows' values."""
    xs = [[D(v) for v in row] for row in x.double().tolist()]
    ys = [[D(v) for v in row] for row in y.double().tolist()]
    xn = [sum(v * v for v in r) for r in xs]
    yn = [sum(v * v for v in r) for r in ys]
    s = [[sum((a - b) * (a - b) for a, b in zip(r, q)) for q in ys] for r in xs]
    return s, xn, yn


def smallest_subnormal(dtype):
    fi = torch.finfo(dtype)
    return fi.tiny * fi.eps


def check(got, x, y, squared, eps):
    """Every entry of `got` within the error model (module docstring) of the exact value."""
    fi = torch.finfo(got.dtype)
    u = D(fi.eps) / 2
    # A squared distance below the normal range cannot be stored to relative accuracy: the
    # output's rounding (and the products that underflow) lose up to the smallest subnormal.
    # Distances themselves stay normal down to sqrt(tiny): those must be relatively accurate.
    sub = D(smallest_subnormal(got.dtype)) * 2 * (x.shape[1] + 2)
    largest = D(fi.max)
    s_true, xn, yn = exact_squared(x, y)
    bad = []
    for i, row in enumerate(got.tolist()):
        for j, value in enumerate(row):
            s = s_true[i][j]
            bound_s = C_MODEL * x.shape[1] * u * (xn[i] + yn[j])
            want = s if squared else max(s, D(eps)).sqrt()
            if want > 2 * largest:  # the true value is beyond the dtype: inf is right
                ok = value == math.inf
            elif want > largest / 2:  # within rounding of the overflow threshold
                ok = value > 0
            elif not math.isfinite(value):
                ok = False
            elif squared:
                ok = abs(D(value) - want) <= bound_s + u * want + sub
            else:
                # |sqrt(a) - sqrt(b)| = |a - b| / (sqrt(a) + sqrt(b)), plus the final rounding.
                g = D(value)
                ok = g == want or abs(g - want) <= 2 * u * want + bound_s / (g + want)
            if not ok:
                bad.append((i, j, value, float(want)))
    assert not bad, f"{len(bad)} of {got.numel()} entries wrong, first (i, j, got, exact): {bad[:3]}"


@pytest.mark.parametrize("op", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("squared", [False, True])
def test_points_5e19_apart(op, dtype, squared):
    """The reported case: a distance of 5e19, far inside float32's range, whose square (and the
    rows' squared norms) are not."""
    x = torch.tensor([[1e20, 0.0, 3.0], [1e20, 5e19, 3.0], [0.0, 0.0, 1.0]], dtype=dtype)
    got = op(x, None, squared, 1e-12)
    check(got, x, x, squared, 1e-12)
    if not squared:
        # One coordinate differs (by x[1, 1] exactly, the others cancel): the direct path's division
        # by the scale (u), square (u, halved by the square root), square root (u), product with the
        # scale (u). (The scale is that difference itself here, so the path is even exact.)
        want, rel = float(x[1, 1]), 3.5 * torch.finfo(dtype).eps / 2
        assert abs(got[0, 1].item() - want) <= rel * want
        assert abs(got[1, 0].item() - want) <= rel * want


@pytest.mark.parametrize("op", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("kinds", [("huge",), ("tiny",), ("huge", "ordinary"), ("tiny", "ordinary"),
                                   ("huge", "ordinary", "tiny")], ids="-".join)
def test_mixed_magnitudes_match_exact(op, dtype, squared, kinds, generator):
    # 67 rows straddle the CUDA kernel's 64-row tile; D = 19 straddles its 16-wide steps.
    n, m, d = 67, 9, 19
    x = mixed_rows(n, d, dtype, kinds, generator)
    y = mixed_rows(m, d, dtype, kinds, generator)
    y[0] = x[5]  # a zero distance
    y[1] = x[6] * (1 + 4 * torch.finfo(dtype).eps)  # a near pair, relative to its own scale
    y[2] = 0  # a zero row: tiny against tiny rows, ordinary against ordinary ones
    # eps = 0 keeps tiny distances visible (the default floor would hide them).
    eps = 0.0
    check(op(x, y, squared, eps), x, y, squared, eps)
    check(op(x, None, squared, eps), x, x, squared, eps)


@pytest.mark.parametrize("op", BACKENDS)
def test_huge_rows_do_not_disturb_ordinary_pairs(op, generator):
    """Ordinary pairs in a call with huge rows keep the accuracy relative to their own norms
    (a global rescaling would flush their squares to subnormals)."""
    x = torch.randn(40, 8, generator=generator)
    y = torch.randn(30, 8, generator=generator)
    x_big = torch.cat([x, torch.full((3, 8), 1e30), torch.full((2, 8), -3e25)])
    check(op(x_big, y, False, 1e-12), x_big, y, False, 1e-12)
    check(op(x_big, None, True, 1e-12), x_big, x_big, True, 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_of_huge_rows_is_finite_and_right(dtype, generator):
    """d sum_j |x_i - y_j| / dx_i = sum_j (x_i - y_j) / |x_i - y_j| holds at any scale."""
    big = math.sqrt(torch.finfo(dtype).max) * 8
    x = (torch.randn(4, 3, generator=generator, dtype=torch.float64) * big).to(dtype).requires_grad_()
    y = (torch.randn(5, 3, generator=generator, dtype=torch.float64) * big).to(dtype)
    out = ops.pairwise_distance(x, y)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(gx).all()
    # Float64 reference after an exact power-of-two rescaling (unit directions are scale-free).
    c = 2.0 ** math.ceil(math.log2(big))
    xs, ys = x.detach().double() / c, y.double() / c
    diff = xs[:, None, :] - ys[None, :, :]
    dist = diff.norm(dim=-1, keepdim=True)
    want = (diff / dist).sum(1)
    # x_i * sum_j w_ij - sum_j w_ij y_j: terms of size |x_i| / |x_i - y_j| (or |y_j| / ...)
    # cancel; each is off by ~D u (from out and the products), summed over j.
    cond = ((xs.norm(dim=1)[:, None, None] + ys.norm(dim=1)[None, :, None]) / dist).sum(1)
    tol = C_MODEL * 3 * torch.finfo(dtype).eps * cond
    assert ((gx.double() - want).abs() <= tol).all(), (gx, want)
