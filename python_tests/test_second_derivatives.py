"""Gradients are right or refused: second derivatives through the ops, and inputs that require
grad where the op does not differentiate.

- pairwise_distance: second (and higher) derivatives are implemented (its backward in PyTorch ops
  when create_graph=True): gradgradcheck in float64, and Hessian-vector products against the
  reference's autograd.
- info_nce: its backward is a fused kernel; differentiating the gradient raises a RuntimeError
  naming the op (before: a silently wrong value, 3.65 against the reference's 2.07, or an "unused
  tensor" error). First derivatives under create_graph=True stay right.
- distance_weighted_negatives: indices, no gradient; an x that requires grad just works (before:
  an internal "out=... arguments don't support automatic differentiation" error).
"""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from diva_ext import ops, reference

from info_nce_gradient_error_model import info_nce_gradient_bounds
from pairwise_distance_error_model import distance_error_bound, gradient_error_bound
from tolerances import SECOND_ORDER, accumulation, assert_within

F64 = torch.float64


def hvp_error_bounds(x, y, w, v, squared):
    """Bounds on |ours - reference| for the HVP of sum(w * distances) along v, both in float64.
    The Hessian of d_ij in x_i is (I - u u^T) / d_ij (u the unit difference; squared: 2 I), so each
    HVP entry sums the terms w_ij (dv - u <u, dv>) / d_ij, dv = v_x,i - v_y,j, over j (and the
    D-term inner products): gamma_{D + M + 8} of the terms' absolute sum, plus three times the
    relative error of d (in u twice and in 1/d); both sides obey this, hence the factor 2."""
    x, y, w = x.detach(), y.detach(), w.abs()
    vx, vy = (t.abs() for t in v)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    dv = vx[:, None, :] + vy[None, :, :]  # |v_x,i - v_y,j| <= this, [N, M, D]
    if squared:
        terms_x = (2 * w[:, :, None] * dv).sum(1)
        terms_y = (2 * w[:, :, None] * dv).sum(0)
        rel = accumulation(d + m + 8, F64)
        return 2 * rel * terms_x, 2 * rel * terms_y
    diff = x[:, None, :] - y[None, :, :]
    dist = diff.square().sum(-1).sqrt()
    unit_diff = (diff / dist[..., None]).abs()
    per_term = (w / dist)[..., None] * (dv + unit_diff * (unit_diff * dv).sum(-1, keepdim=True))
    rel = accumulation(d + max(n, m) + 8, F64) + 3 * distance_error_bound(x, y, dtype=F64, oracle=False) / dist
    bound = rel[..., None] * per_term
    return 2 * bound.sum(1), 2 * bound.sum(0)


def separated(n, d, generator):
    """Random float64 rows, kept away from each other (no clamp within finite-difference reach)."""
    return torch.randn(n, d, generator=generator, dtype=F64) * 3


# ---- pairwise_distance ------------------------------------------------------------------------


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("self_distance", [False, True])
def test_pairwise_distance_gradgradcheck(squared, self_distance, generator):
    x = separated(6, 4, generator).requires_grad_()
    y = None if self_distance else separated(5, 4, generator).requires_grad_()
    if self_distance:
        # The diagonal (a row against itself) is 0 under any perturbation: the clamp, gradient 0.
        fn = lambda a: ops.pairwise_distance(a, squared=squared)  # noqa: E731
        inputs = (x,)
    else:
        fn = lambda a, b: ops.pairwise_distance(a, b, squared=squared)  # noqa: E731
        inputs = (x, y)
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("squared", [False, True])
def test_pairwise_distance_hessian_vector_products_match_reference(squared, generator):
    x = separated(7, 3, generator).requires_grad_()
    y = separated(9, 3, generator).requires_grad_()
    w = torch.randn(7, 9, generator=generator, dtype=F64)
    v = (torch.randn(7, 3, generator=generator, dtype=F64), torch.randn(9, 3, generator=generator, dtype=F64))

    def hvp(fn):
        g = torch.autograd.grad((fn(x, y, squared=squared) * w).sum(), (x, y), create_graph=True)
        return torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v)), (x, y))

    got, want = hvp(ops.pairwise_distance), hvp(reference.pairwise_distance)
    for a, b, bound, name in zip(got, want, hvp_error_bounds(x, y, w, v, squared), ("x", "y")):
        assert_within(a, b, SECOND_ORDER * bound, f"HVP {name}")


def test_pairwise_distance_first_derivative_unchanged_under_create_graph(generator):
    x = separated(8, 5, generator).requires_grad_()
    y = separated(6, 5, generator)
    w = torch.randn(8, 6, generator=generator, dtype=F64)
    (plain,) = torch.autograd.grad((ops.pairwise_distance(x, y) * w).sum(), x)
    (graph,) = torch.autograd.grad((ops.pairwise_distance(x, y) * w).sum(), x, create_graph=True)
    # The fused kernel and the PyTorch-op backward sum the same terms in other orders: each within
    # the gradient model of the exact value, so the two within the sum (oracle=True: float64 twice).
    assert_within(graph, plain, gradient_error_bound(x.detach(), y, w)[0], "create_graph vs plain")


# ---- info_nce ---------------------------------------------------------------------------------


def unit(n, d, generator):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=generator, dtype=F64), dim=1)


def info_nce_calls():
    args = (0.5, "none", 0.5, 1.4)
    return [
        pytest.param(lambda q, k, queue: ops.info_nce(q, k, queue, temperature=0.5), id="ops"),
        pytest.param(lambda q, k, queue: torch.ops.diva_ext.info_nce(q, k, queue, *args), id="op"),
    ]


@pytest.mark.parametrize("call", info_nce_calls())
@pytest.mark.parametrize("queue_grad", [False, True])
def test_info_nce_second_derivative_raises_naming_the_op(call, queue_grad, generator):
    q = unit(3, 4, generator).requires_grad_()
    k = unit(3, 4, generator)
    queue = unit(5, 4, generator).requires_grad_(queue_grad)
    loss, _ = call(q, k, queue)
    (gq,) = torch.autograd.grad(loss.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match=r"info_nce: second derivatives .* not implemented"):
        torch.autograd.grad(gq.square().sum(), q)
    # The reported case: q also enters the objective directly, which used to hide the missing
    # term behind a plausible (wrong) number.
    loss, _ = call(q, k, queue)
    (gq,) = torch.autograd.grad(loss.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match=r"info_nce: second derivatives"):
        torch.autograd.grad(gq.square().sum() + q.sum(), q)


@pytest.mark.parametrize("call", info_nce_calls())
def test_info_nce_first_derivative_right_under_create_graph(call, generator):
    """create_graph=True for another part of the graph (e.g. a gradient penalty elsewhere) must
    not change info_nce's first derivatives."""
    q = unit(4, 6, generator).requires_grad_()
    k = unit(4, 6, generator).requires_grad_()
    queue = unit(9, 6, generator)
    loss, lse = call(q, k, queue)
    got = torch.autograd.grad((loss + 0.3 * lse).sum(), (q, k), create_graph=True)
    loss, lse = reference.info_nce(q, k, queue, temperature=0.5)
    want = torch.autograd.grad((loss + 0.3 * lse).sum(), (q, k))
    ones = torch.ones(4, dtype=F64)
    bounds = info_nce_gradient_bounds(q, k, queue, ones, 0.3 * ones, temperature=0.5, weighting="none", dtype=F64)
    for a, b, bound, name in zip(got, want, bounds, ("q", "k")):
        # Both sides float64 and within the model: twice it.
        assert_within(a.detach(), b, 2 * SECOND_ORDER * bound, f"grad {name}")


# ---- distance_weighted_negatives --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distance_weighted_negatives_accepts_requires_grad(dtype, generator):
    x = torch.nn.functional.normalize(torch.randn(12, 5, generator=generator, dtype=dtype), dim=1)
    labels = torch.arange(12) % 3
    anchors = torch.arange(12)
    seed = int(torch.randint(0, 2**31, (1,), generator=generator))
    want = ops.distance_weighted_negatives(x, labels, anchors, generator=torch.Generator().manual_seed(seed))
    got = ops.distance_weighted_negatives(
        x.clone().requires_grad_(), labels, anchors, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(got, want)
    assert not got.requires_grad
