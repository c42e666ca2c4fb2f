"""pairwise_distance: values, precision, gradients, registration, compile and errors."""

import os
import sys
from pathlib import Path

import pytest
import torch
from torch.library import opcheck

import diva_ext
from diva_ext import ops, reference
from conftest import requires_cuda
from pairwise_distance_error_model import distance_error_bound, gradient_error_bound
from tolerances import SECOND_ORDER, accumulation, assert_within, unit_roundoff

SIZES = [1, 2, 7, 129, 300]
DIMS = [1, 3, 33, 128]


def exact_distances(x, y, squared=False, eps=1e-12):
    """Float64 direct-difference distances: an oracle independent of the norm expansion."""
    diff = x.double()[:, None, :] - y.double()[None, :, :]
    s = diff.square().sum(-1)
    return s if squared else s.clamp_min(eps).sqrt()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_oracle(n, d, dtype, generator):
    m = SIZES[(SIZES.index(n) + 2) % len(SIZES)]
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    y = torch.randn(m, d, generator=generator, dtype=dtype)
    for squared in (False, True):
        got = ops.pairwise_distance(x, y, squared=squared)
        assert got.shape == (n, m) and got.dtype == dtype
        want = exact_distances(x, y, squared)
        assert_within(got, want, distance_error_bound(x, y, squared), f"squared={squared}")


@pytest.mark.parametrize("n", SIZES)
def test_y_none_is_self_distance(n, generator):
    x = torch.randn(n, 17, generator=generator)
    # The self path and a copy of x take other routes (diagonal exact, near pairs recomputed):
    # each within the bound of the oracle rather than of each other.
    assert_within(ops.pairwise_distance(x), exact_distances(x, x), distance_error_bound(x, x), "y=None")
    assert_within(ops.pairwise_distance(x, x.clone()), exact_distances(x, x), distance_error_bound(x, x), "y=x")


def test_several_row_blocks(generator):
    """The CPU kernel works in row blocks of ~8 MiB of output (at least 256 rows): with M = 9000
    float64 columns, 600 rows make blocks of 256, 256 and 88 rows, forward and backward."""
    x = torch.randn(600, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9000, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    y.data[7] = x.data[300] + 1e-9  # a near pair in the second block (exact recompute)
    g = torch.randn(600, 9000, generator=generator, dtype=torch.float64)
    out = ops.pairwise_distance(x, y)
    assert_within(out, exact_distances(x.detach(), y.detach()), distance_error_bound(x.detach(), y.detach()), "values")
    got = torch.autograd.grad((out * g).sum(), (x, y))
    want = torch.autograd.grad((exact_distances(x, y) * g).sum(), (x, y))
    bounds = gradient_error_bound(x.detach(), y.detach(), g)
    for a, b, bound, name in zip(got, want, bounds, ("grad x", "grad y")):
        assert_within(a, b, bound, name)


def test_non_contiguous_inputs(generator):
    base_x = torch.randn(40, 66, generator=generator)
    base_y = torch.randn(70, 33, generator=generator)
    x = base_x[::2, ::2]  # strided rows and columns
    y = base_y.t().contiguous().t()[::3]  # column-major storage
    assert not x.is_contiguous() and not y.is_contiguous()
    assert_within(ops.pairwise_distance(x, y), exact_distances(x, y), distance_error_bound(x, y))


def test_self_distance_of_unit_vectors_is_tiny(generator):
    x = torch.nn.functional.normalize(torch.randn(1000, 128, generator=generator), dim=1)
    # Identical rows are recomputed by direct difference (the diagonal always, a copy as a near
    # pair), so s = 0 exactly and the value is the floor sqrt(eps) = 1e-6, rounded once: well
    # inside the contract's 1e-5 (cdist gives ~1e-3).
    floor = (1e-12) ** 0.5 * (1 + unit_roundoff(torch.float32))
    assert ops.pairwise_distance(x).diagonal().abs().max() <= floor
    assert ops.pairwise_distance(x, x.clone()).diagonal().abs().max() <= floor


def test_near_points_are_accurate(generator):
    x = torch.nn.functional.normalize(torch.randn(200, 64, generator=generator), dim=1)
    y = x + 1e-4 * torch.randn(200, 64, generator=generator)
    got = ops.pairwise_distance(x, y).diagonal().double()
    want = exact_distances(x, y).diagonal()
    # The kernel recomputes near pairs directly: sum_k (x_k - y_k)^2 of positive terms, each with
    # relative error <= 3u (difference, square), summed with gamma_D; the square root halves it
    # and rounds once more. float64's oracle error is 2^-29 of that.
    u = unit_roundoff(torch.float32)
    rel = (3 * u + accumulation(x.shape[1])) / 2 + u
    assert_within(got, want, SECOND_ORDER * rel * want, "near pairs")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("self_distance", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_gradcheck_float64(seed, self_distance, squared):
    g = torch.Generator().manual_seed(seed)
    n, m, d = [(1, 1, 1), (2, 3, 5), (7, 4, 3), (5, 9, 17), (13, 2, 65)][seed]
    x = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = None if self_distance else torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = (x,) if self_distance else (x, y)
    fn = (lambda a: ops.pairwise_distance(a, squared=squared)) if self_distance else (
        lambda a, b: ops.pairwise_distance(a, b, squared=squared))
    # Self-distances sit on the clamp (non-differentiable); gradcheck skips nothing, so keep
    # them off-diagonal by checking the distance on its own inputs.
    if self_distance and not squared:
        fn = lambda a: ops.pairwise_distance(a) * (1 - torch.eye(a.shape[0], dtype=a.dtype))  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("squared", [False, True])
def test_gradients_match_reference_float32(squared, generator):
    x = torch.randn(129, 33, generator=generator, requires_grad=True)
    y = torch.randn(300, 33, generator=generator, requires_grad=True)
    w = torch.randn(129, 300, generator=generator)
    gx, gy = torch.autograd.grad((ops.pairwise_distance(x, y, squared=squared) * w).sum(), (x, y))
    x64, y64 = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
    rx, ry = torch.autograd.grad((reference.pairwise_distance(x64, y64, squared=squared) * w.double()).sum(), (x64, y64))
    bx, by = gradient_error_bound(x.detach(), y.detach(), w, squared)
    assert_within(gx, rx, bx, "grad x")
    assert_within(gy, ry, by, "grad y")


def test_only_requested_gradients(generator):
    x = torch.randn(5, 4, generator=generator, requires_grad=True)
    y = torch.randn(6, 4, generator=generator)
    (gx,) = torch.autograd.grad(ops.pairwise_distance(x, y).sum(), (x,))
    x64 = x.detach().double().requires_grad_()
    (rx,) = torch.autograd.grad(exact_distances(x64, y).sum(), (x64,))
    assert_within(gx, rx, gradient_error_bound(x.detach(), y, torch.ones(5, 6))[0], "grad x")


def test_gradient_is_zero_where_clamp_is_active():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    d = ops.pairwise_distance(x)
    grad_d = torch.zeros_like(d)
    grad_d[0, 1] = 1.0  # rows 0 and 1 coincide: clamp active
    (gx,) = torch.autograd.grad(d, (x,), grad_d)
    assert torch.equal(gx, torch.zeros_like(gx))
    assert torch.isfinite(gx).all()


@pytest.mark.parametrize("self_distance", [False, True])
def test_opcheck(self_distance, generator):
    x = torch.randn(9, 5, generator=generator, requires_grad=True)
    y = None if self_distance else torch.randn(11, 5, generator=generator, requires_grad=True)
    opcheck(torch.ops.diva_ext.pairwise_distance.default, (x, y, False, 1e-12))
    opcheck(torch.ops.diva_ext.pairwise_distance.default, (x, y, True, 1e-12))
    out = ops.pairwise_distance(x, y).detach()
    grad = torch.randn_like(out)
    opcheck(
        torch.ops.diva_ext._pairwise_distance_backward.default,
        (grad, x.detach(), None if y is None else y.detach(), out, False, 1e-12, True, True),
    )


def test_torch_compile_fullgraph(generator):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def loss_fn(a, b):
        return (ops.pairwise_distance(a, b) + ops.pairwise_distance(a, squared=True).sum(1, keepdim=True)).mean()

    x = torch.randn(13, 8, generator=generator, requires_grad=True)
    y = torch.randn(6, 8, generator=generator, requires_grad=True)
    got = loss_fn(x, y)
    gx, gy = torch.autograd.grad(got, (x, y))
    xd, yd = x.detach(), y.detach()
    dist, sq = exact_distances(xd, yd), exact_distances(xd, xd, squared=True)
    want = (dist + sq.sum(1, keepdim=True)).mean()
    # The value: each distance within its bound, each row sum of squared distances within the sum
    # of theirs plus its own accumulation, then the broadcast add and the mean's sum (any order,
    # as inductor fuses them).
    n, m, u = x.shape[0], y.shape[0], unit_roundoff(torch.float32)
    row_sums = sq.sum(1, keepdim=True)
    row_bound = distance_error_bound(xd, xd, squared=True).sum(1, keepdim=True) + accumulation(n) * row_sums
    terms = dist + row_sums
    value_bound = ((distance_error_bound(xd, yd) + row_bound).sum() + (accumulation(n * m) + u) * terms.sum()) / (n * m)
    assert_within(got.detach(), want, value_bound, "value")
    x64, y64 = xd.double().requires_grad_(), yd.double().requires_grad_()
    w = (exact_distances(x64, y64) + (x64[:, None] - x64[None]).square().sum(-1).sum(1, keepdim=True)).mean()
    rx, ry = torch.autograd.grad(w, (x64, y64))
    # Gradients: the incoming gradient is 1/(n m) on every distance and m/(n m) on every squared
    # self-distance (x plays both roles there); each term within its model, their sum rounded once.
    bx, by = gradient_error_bound(xd, yd, torch.full((n, m), 1.0 / (n * m)))
    sx, sy = gradient_error_bound(xd, xd, torch.full((n, n), m / (n * m)), squared=True)
    assert_within(gx, rx, bx + sx + sy + u * rx.abs(), "grad x")
    assert_within(gy, ry, by, "grad y")


@pytest.mark.parametrize("shape_x,shape_y", [((0, 4), (3, 4)), ((3, 4), (0, 4)), ((0, 4), (0, 4)), ((3, 0), (2, 0))])
def test_empty_inputs(shape_x, shape_y):
    x = torch.randn(*shape_x, requires_grad=True)
    y = torch.randn(*shape_y, requires_grad=True)
    d = ops.pairwise_distance(x, y)
    assert d.shape == (shape_x[0], shape_y[0])
    torch.testing.assert_close(d, exact_distances(x, y).float())
    d.sum().backward()
    assert x.grad.shape == x.shape and y.grad.shape == y.shape
    assert not x.grad.any() and not y.grad.any()


@pytest.mark.parametrize(
    "x,y,pattern",
    [
        (torch.randn(3, 4), torch.randn(5, 6), r"same feature dimension D"),
        (torch.randint(0, 5, (3, 4)), None, r"x must be .*float"),
        (torch.randn(3, 4), torch.randint(0, 5, (3, 4)), r"x and y must have the same dtype"),
        (torch.randn(3, 4), torch.randn(3, 4, dtype=torch.float64), r"x and y must have the same dtype"),
        (torch.randn(4), None, r"x must be a 2-D tensor"),
        (torch.randn(3, 4), torch.randn(2, 3, 4), r"y must be a 2-D tensor"),
        (torch.randn(3, 4), torch.randn(3, 4, device="meta"), r"same device"),
    ],
)
def test_bad_inputs_name_the_argument(x, y, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        ops.pairwise_distance(x, y)


def test_bad_eps():
    with pytest.raises(RuntimeError, match=r"eps must be finite and >= 0"):
        ops.pairwise_distance(torch.randn(2, 2), eps=-1.0)


def test_cuda_kernel_registered_when_built_with_cuda():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_env

    expected = (
        os.environ.get("DIVA_FORCE_CPU") != "1"
        and torch.version.cuda is not None
        and build_env._real_cuda_home() is not None
    )
    has = torch._C._dispatch_has_kernel_for_dispatch_key("diva_ext::pairwise_distance", "CUDA")
    has_bwd = torch._C._dispatch_has_kernel_for_dispatch_key("diva_ext::_pairwise_distance_backward", "CUDA")
    assert has == expected and has_bwd == expected
    assert diva_ext.cuda_built() == expected


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (31, 33, 7), (129, 127, 128), (300, 65, 513)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(n, m, d, dtype, generator):
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    y = torch.randn(m, d, generator=generator, dtype=dtype)
    grad = torch.randn(n, m, generator=generator, dtype=dtype)
    for squared in (False, True):
        x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
        exact = exact_distances(x64, y64, squared)
        want = [exact.detach(), *torch.autograd.grad(exact, (x64, y64), grad.double())]
        bounds = [distance_error_bound(x, y, squared), *gradient_error_bound(x, y, grad, squared)]
        for dev in ("cpu", "cuda"):  # each against float64 within its own bound (other sum orders)
            xd, yd = x.to(dev).requires_grad_(), y.to(dev).requires_grad_()
            out = ops.pairwise_distance(xd, yd, squared=squared)
            gx, gy = torch.autograd.grad(out, (xd, yd), grad.to(dev))
            for got, w, bound, name in zip((out, gx, gy), want, bounds, ("value", "grad x", "grad y")):
                assert_within(got.detach().cpu(), w, bound, f"{dev} squared={squared} {name}")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_error_within_twice_torch(dtype, generator):
    x = torch.randn(257, 96, generator=generator)
    y = torch.randn(129, 96, generator=generator)
    want = exact_distances(x.to(dtype), y.to(dtype))
    ours = ops.pairwise_distance(x.to(dtype).cuda(), y.to(dtype).cuda()).double().cpu()
    theirs = reference.pairwise_distance(x.to(dtype).cuda(), y.to(dtype).cuda()).double().cpu()
    # + one ulp of the largest distance in dtype: the result's own rounding (torch's may be exact by luck).
    assert (ours - want).abs().max() <= 2 * (theirs - want).abs().max() + torch.finfo(dtype).eps * want.abs().max()


@requires_cuda
@pytest.mark.cuda
def test_cuda_runs_on_current_stream(generator):
    x = torch.randn(500, 64, generator=generator).cuda()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = ops.pairwise_distance(x)
    s.synchronize()
    assert_within(out.cpu(), exact_distances(x.cpu(), x.cpu()), distance_error_bound(x.cpu(), x.cpu()))
