"""info_nce: values, gradients, registration, compile, edge cases and errors (CPU kernels).

The oracle is diva_ext.reference.info_nce in float64: MoCo's explicit-logits computation
(einsum + cat + cross_entropy) with DiVA's weights written out, independent of the fused kernels.
"""

import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from diva_ext import ops, reference
from diva_ext._registrations.info_nce import STATS_COLUMNS

from dance_regimes import REGIMES, UPPER_CUTOFF, tiny_normaliser_inputs
from info_nce_gradient_error_model import info_nce_gradient_bounds, info_nce_value_bounds
from info_nce_rows_error_model import float64_oracle_error, info_nce_rows
from tolerances import SECOND_ORDER, accumulation, assert_within, first_order_error_bound, gamma, unit_roundoff

WEIGHTINGS = ["none", "dance"]
# Odd sizes: single rows, a single negative, K around the kernel's 512-row tile, D = 1.
SIZES = [(1, 1, 8), (1, 1025, 32), (2, 3, 1), (5, 511, 16), (17, 513, 64), (130, 700, 128)]


def unit(*shape, generator, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1).to(dtype)


def moco_inputs(b, k, d, generator, dtype=torch.float32, noise=0.5):
    """Queries, positives near them, and a queue of unrelated unit vectors."""
    q = unit(b, d, generator=generator, dtype=torch.float64)
    pos = F.normalize(q + noise * torch.randn(b, d, generator=generator, dtype=torch.float64), dim=1)
    queue = unit(k, d, generator=generator, dtype=torch.float64)
    return q.to(dtype), pos.to(dtype), queue.to(dtype)


def ref64(q, k, queue, **kw):
    return reference.info_nce(q.double(), k.double(), queue.double(), **kw)


def rows_error_bound(q, k, queue, dtype=torch.float32, **kw):
    """[2, B]: SECOND_ORDER x the first-order rounding bound of (loss_i, lse_i) computed in dtype,
    row by row (rows are independent given the queue: B small graphs instead of one large one).
    For float64 it is doubled: the float64 oracle's own error obeys the same model."""
    rows = [first_order_error_bound(functools.partial(info_nce_rows, **kw), (q[i:i + 1], k[i:i + 1], queue), dtype)
            for i in range(q.shape[0])]
    bound = SECOND_ORDER * torch.cat(rows, 1) if rows else torch.zeros(2, 0, dtype=torch.float64)
    return 2 * bound if dtype == torch.float64 else bound


@pytest.mark.parametrize("b,k,d", SIZES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_float64_matches_reference(b, k, d, weighting, generator):
    q, pos, queue = moco_inputs(b, k, d, generator, torch.float64)
    for temperature in (0.07, 0.5):
        kw = dict(temperature=temperature, weighting=weighting)
        loss, lse = ops.info_nce(q, pos, queue, **kw)
        want_loss, want_lse = ref64(q, pos, queue, **kw)
        assert loss.shape == (b,) and lse.shape == (b,) and loss.dtype == torch.float64
        bound = rows_error_bound(q, pos, queue, torch.float64, **kw)  # both sides float64: doubled
        assert_within(loss, want_loss, bound[0], "loss")
        assert_within(lse, want_lse, bound[1], "lse")


# The floor of the "within twice torch" yardsticks: the result's own rounding to float32 (u) and
# that of the operation forming it (u, or an elementary function's ulp): one ulp, 2 u |value|,
# which neither torch's error (it may round the other way by luck) nor the sensitivity to the
# inputs' rounding (small where the value hardly depends on them) need cover; plus the float64
# oracle's own error (float64_oracle_error: its loss = lse - a cancels).
OUTPUT_ROUNDING = torch.finfo(torch.float32).eps


def rounding_sensitivity(q, k, queue, **kw):
    """Per row, the first-order change of (loss, lse) when every input moves by one float32
    rounding: eps * sum |d out / d x| |x| over q_i, k_i and the queue, in float64.

    DaNCE's weights amplify the rounding of the inner products (d log w / ds reaches 4(n - 2) /
    lower_cutoff^2 at the lower cutoff), so two correct float32 computations can differ by far
    more than an ulp of the result; this is the yardstick for that part of the error.
    """
    eps = torch.finfo(torch.float32).eps
    out = torch.zeros(2, q.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):  # rows are independent given the queue
        for o in range(2):
            ins = [t.double().requires_grad_() for t in (q[i : i + 1], k[i : i + 1], queue)]
            value = reference.info_nce(*ins, **kw)[o].sum()
            grads = torch.autograd.grad(value, ins)
            out[o, i] = eps * sum((g.abs() * x.detach().abs()).sum() for g, x in zip(grads, ins))
    return out


@pytest.mark.parametrize("b,k,d", SIZES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_float32_error_within_twice_torch(b, k, d, weighting, generator):
    """float32: our error against float64 <= 2x that of the same explicit code in float32, plus
    twice the error that one rounding of the inputs explains (rounding_sensitivity)."""
    q, pos, queue = moco_inputs(b, k, d, generator)
    kw = dict(temperature=0.07, weighting=weighting)
    want = ref64(q, pos, queue, **kw)
    ours = ops.info_nce(q, pos, queue, **kw)
    theirs = reference.info_nce(q, pos, queue, **kw)
    sensitivity = rounding_sensitivity(q, pos, queue, **kw)
    oracle = float64_oracle_error(*want, queue.shape[0])
    for o, t, w, sens, r in zip(ours, theirs, want, sensitivity, oracle):
        assert o.dtype == torch.float32
        err_ours = (o.double() - w).abs()
        err_torch = (t.double() - w).abs().max().item()
        assert (err_ours <= 2 * err_torch + 2 * sens + OUTPUT_ROUNDING * w.abs() + r).all(), (err_ours, err_torch, sens)


@pytest.mark.parametrize("regime", REGIMES)
def test_float32_dance_rows_with_a_tiny_normaliser(regime, generator):
    """Rows with log Z far below 0 (dance_regimes.py). The weights must keep the precision of
    log w: a float32 log Z of magnitude 100 costs ~1e-5 of every weight ("all_at_floor" failed
    CI so), and kept terms summed relative to a far maximum lose ~2e-6 to the rounding of
    differences of magnitude 50 ("max_beyond_cutoff"). Yardstick as in
    test_float32_error_within_twice_torch."""
    q, pos, queue = tiny_normaliser_inputs(regime, generator)
    kw = dict(temperature=0.07, weighting="dance", upper_cutoff=UPPER_CUTOFF)
    q, pos, queue = q.float(), pos.float(), queue.float()
    want = ref64(q, pos, queue, **kw)
    sensitivity = rounding_sensitivity(q, pos, queue, **kw)
    theirs = reference.info_nce(q, pos, queue, **kw)
    oracle = float64_oracle_error(*want, queue.shape[0])
    for o, t, w, sens, r in zip(ops.info_nce(q, pos, queue, **kw), theirs, want, sensitivity, oracle):
        err_ours = (o.double() - w).abs()
        err_torch = (t.double() - w).abs().max().item()
        assert (err_ours <= 2 * err_torch + 2 * sens + OUTPUT_ROUNDING * w.abs() + r).all(), (err_ours, err_torch, sens)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_temperature_001_float32_does_not_overflow(weighting, generator):
    # Logits up to 1/T = 100: exp overflows float32 beyond 88.7, so only a running maximum works.
    b, k, d = 40, 1500, 128
    q, pos, queue = moco_inputs(b, k, d, generator, noise=0.05)
    queue[:20] = F.normalize(q[:20] + 0.01 * torch.randn(20, d, generator=generator), dim=1)
    assert torch.exp(torch.tensor(100.0)).isinf()
    qg, pg = q.clone().requires_grad_(), pos.clone().requires_grad_()
    kw = dict(temperature=0.01, weighting=weighting)
    loss, lse = ops.info_nce(qg, pg, queue, **kw)
    gq, gp = torch.autograd.grad(loss.sum() + 0.5 * lse.sum(), (qg, pg))
    q64, p64 = q.double().requires_grad_(), pos.double().requires_grad_()
    want_loss, want_lse = reference.info_nce(q64, p64, queue.double(), **kw)
    rq, rp = torch.autograd.grad(want_loss.sum() + 0.5 * want_lse.sum(), (q64, p64))
    assert lse.max() > 90 and torch.isfinite(loss).all() and torch.isfinite(gq).all()
    bound = SECOND_ORDER * first_order_error_bound(
        functools.partial(info_nce_rows, temperature=0.01, weighting=weighting), (q, pos, queue))
    assert_within(loss.double(), want_loss.detach(), bound[0], "loss")
    assert_within(lse.double(), want_lse.detach(), bound[1], "lse")
    # Gradients of sum(loss + lse / 2): the closed-form componentwise model (g = 1, h = 1/2).
    ones = torch.ones(b, dtype=torch.float64)
    bq, bk, _ = info_nce_gradient_bounds(q, pos, queue, ones, 0.5 * ones, **kw)
    assert_within(gq.double(), rq, SECOND_ORDER * bq, "grad q")
    assert_within(gp.double(), rp, SECOND_ORDER * bk, "grad k")


NEEDS = [n for n in itertools.product([True, False], repeat=3) if any(n)]


# Every combination of inputs needing gradients at two small sizes; the paths that differ
# (O saved, tiles recomputed for q and/or the queue) at a size with several row blocks.
GRAD_CASES = [(n, s) for n in NEEDS for s in [(1, 1, 3), (3, 1030, 17)]] + [
    (n, (70, 600, 64)) for n in [(True, True, False), (True, False, True), (False, False, True)]
]


@pytest.mark.parametrize("needs,size", GRAD_CASES, ids=lambda v: "".join("QKV"[i] if x else "_" for i, x in enumerate(v)) if len(v) == 3 and isinstance(v[0], bool) else "x".join(map(str, v)))
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_gradients_match_reference(needs, size, weighting, generator):
    b, k, d = size
    q, pos, queue = moco_inputs(b, k, d, generator, torch.float64)
    g_loss = torch.randn(b, generator=generator, dtype=torch.float64)
    g_lse = torch.randn(b, generator=generator, dtype=torch.float64)
    kw = dict(temperature=0.1, weighting=weighting)
    grads = {}
    for name, fn in (("wrapper", ops.info_nce), ("public_op", _public_op), ("reference", reference.info_nce)):
        ins = [t.clone().requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
        loss, lse = fn(*ins, **kw)
        grads[name] = torch.autograd.grad((loss * g_loss).sum() + (lse * g_lse).sum(), [t for t in ins if t.requires_grad])
    bounds = float64_gradient_bounds(q, pos, queue, g_loss, g_lse, **kw)
    for name in ("wrapper", "public_op"):
        for got, want, bound in zip(grads[name], grads["reference"], [b for b, n in zip(bounds, needs) if n]):
            assert_within(got, want, bound, name)


def float64_gradient_bounds(q, k, queue, g, h, **kw):
    """Bounds of float64 gradients against the float64 reference: both obey the model, so doubled."""
    return [2 * SECOND_ORDER * b for b in info_nce_gradient_bounds(q, k, queue, g, h, dtype=torch.float64, **kw)]


def _public_op(q, k, queue, *, temperature, weighting, lower_cutoff=0.5, upper_cutoff=1.4):
    """The registered op itself (its autograd recomputes everything), bypassing the wrapper."""
    return torch.ops.diva_ext.info_nce(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff)


def test_float32_gradients_match_reference(generator):
    q, pos, queue = moco_inputs(64, 1100, 128, generator)
    for weighting, needs in itertools.product(WEIGHTINGS, [(True, True, False), (True, True, True)]):
        ins = [t.clone().requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
        loss, _ = ops.info_nce(*ins, weighting=weighting)
        got = torch.autograd.grad(loss.mean(), [t for t in ins if t.requires_grad])
        ins64 = [t.double().requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
        loss64, _ = reference.info_nce(*ins64, weighting=weighting)
        want = torch.autograd.grad(loss64.mean(), [t for t in ins64 if t.requires_grad])
        mean = torch.full((q.shape[0],), 1.0 / q.shape[0], dtype=torch.float64)
        bounds = info_nce_gradient_bounds(q, pos, queue, mean, 0 * mean, temperature=0.07, weighting=weighting)
        for a, w, bound, name in zip(got, want, [b for b, n in zip(bounds, needs) if n], ("q", "k", "queue")):
            assert_within(a, w, SECOND_ORDER * bound, f"{weighting} grad {name}")


@pytest.mark.parametrize("needs", NEEDS, ids=lambda n: "".join("QKV"[i] if x else "_" for i, x in enumerate(n)))
def test_gradcheck_float64(needs, generator):
    # weighting="none" only: DaNCE's weights are constants by contract, which finite differences
    # of the whole function would not see (its gradients are checked against the reference).
    q, pos, queue = moco_inputs(3, 7, 5, generator, torch.float64)
    ins = [t.clone().requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
    for fn in (ops.info_nce, _public_op):
        assert torch.autograd.gradcheck(lambda *a: fn(*a, temperature=0.3, weighting="none"), ins)


def test_in_batch_negatives_reach_both_views(generator):
    """queue = the other view (SimCLR-style in-batch negatives): both views get gradients."""
    b, d = 33, 24
    for weighting in WEIGHTINGS:
        a, v, _ = moco_inputs(b, 1, d, generator, torch.float64)
        a1, v1 = a.clone().requires_grad_(), v.clone().requires_grad_()
        loss, _ = ops.info_nce(a1, v1, v1, temperature=0.2, weighting=weighting)
        ga, gv = torch.autograd.grad(loss.mean(), (a1, v1))
        a2, v2 = a.clone().requires_grad_(), v.clone().requires_grad_()
        want, _ = reference.info_nce(a2, v2, v2, temperature=0.2, weighting=weighting)
        ra, rv = torch.autograd.grad(want.mean(), (a2, v2))
        assert gv.abs().sum() > 0
        mean = torch.full((b,), 1.0 / b, dtype=torch.float64)
        bq, bk, bqueue = float64_gradient_bounds(a, v, v, mean, 0 * mean, temperature=0.2, weighting=weighting)
        assert_within(ga, ra, bq, "grad of the first view")
        assert_within(gv, rv, bk + bqueue + unit_roundoff(torch.float64) * rv.abs(), "grad of the second view")


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_moco_backward_does_not_read_the_queue(weighting, generator):
    """With a detached queue the forward saves O, so the queue may change before backward
    (a MemoryQueue enqueues in place) without changing the gradients."""
    q, pos, queue = moco_inputs(9, 600, 16, generator, torch.float64)
    qg, pg = q.clone().requires_grad_(), pos.clone().requires_grad_()
    live = queue.clone()
    loss, _ = ops.info_nce(qg, pg, live, weighting=weighting)
    live.copy_(torch.randn_like(live))
    gq, gp = torch.autograd.grad(loss.sum(), (qg, pg))
    q64, p64 = q.clone().requires_grad_(), pos.clone().requires_grad_()
    want, _ = reference.info_nce(q64, p64, queue, weighting=weighting)
    rq, rp = torch.autograd.grad(want.sum(), (q64, p64))
    ones = torch.ones(9, dtype=torch.float64)
    bq, bk, _ = float64_gradient_bounds(q, pos, queue, ones, 0 * ones, temperature=0.07, weighting=weighting)
    assert_within(gq, rq, bq, "grad q")
    assert_within(gp, rp, bk, "grad k")


def test_backward_op_returns_only_requested_gradients(generator):
    q, pos, queue = moco_inputs(4, 9, 6, generator, torch.float64)
    g = torch.ones(4, dtype=torch.float64)
    args = (0.07, "none", 0.5, 1.4)
    gq, gk, gqueue = torch.ops.diva_ext._info_nce_backward(g, 0 * g, q, pos, queue, None, None, *args, False, True, False)
    assert gq.numel() == 0 and gqueue.numel() == 0 and gk.shape == pos.shape
    loss, _, stats, o = torch.ops.diva_ext._info_nce_forward(q, pos, queue, *args, True)
    assert stats.shape == (4, STATS_COLUMNS) and o.shape == (4, 6)
    # O from the forward and the recomputed path: each within the model of the float64 reference.
    with_o = torch.ops.diva_ext._info_nce_backward(g, 0 * g, q, pos, queue, stats, o, *args, True, False, False)
    without = torch.ops.diva_ext._info_nce_backward(g, 0 * g, q, pos, queue, None, None, *args, True, False, False)
    q64 = q.clone().requires_grad_()
    (want,) = torch.autograd.grad(reference.info_nce(q64, pos, queue, temperature=0.07)[0].sum(), (q64,))
    bound = float64_gradient_bounds(q, pos, queue, g, 0 * g, temperature=0.07, weighting="none")[0]
    assert_within(with_o[0], want, bound, "saved O")
    assert_within(without[0], want, bound, "recomputed")


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_opcheck(weighting, generator):
    q, pos, queue = moco_inputs(5, 13, 6, generator)
    q.requires_grad_()
    pos.requires_grad_()
    args = (0.1, weighting, 0.5, 1.4)
    opcheck(torch.ops.diva_ext.info_nce.default, (q, pos, queue.clone().requires_grad_()) + args)
    opcheck(torch.ops.diva_ext.info_nce.default, (q, pos, queue) + args)
    for save_o in (True, False):
        opcheck(torch.ops.diva_ext._info_nce_forward.default, (q, pos, queue) + args + (save_o,))
    _, _, stats, o = torch.ops.diva_ext._info_nce_forward(q.detach(), pos.detach(), queue, *args, True)
    g = torch.randn(5, generator=generator)
    for saved in ((stats, o), (None, None)):
        opcheck(
            torch.ops.diva_ext._info_nce_backward.default,
            (g, g.flip(0), q.detach(), pos.detach(), queue) + saved + args + (True, True, True),
        )


def test_torch_compile_fullgraph(generator):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, k, queue):
        moco, _ = ops.info_nce(q, k, queue, temperature=0.1)
        dance, lse = ops.info_nce(q, k, k, temperature=0.2, weighting="dance")
        return moco.mean() + dance.mean() + 0.1 * lse.mean()

    q, pos, queue = moco_inputs(11, 600, 32, generator)
    qg, pg = q.clone().requires_grad_(), pos.clone().requires_grad_()
    got = step(qg, pg, queue)
    gq, gp = torch.autograd.grad(got, (qg, pg))
    q64, p64 = q.double().requires_grad_(), pos.double().requires_grad_()
    moco, _ = reference.info_nce(q64, p64, queue.double(), temperature=0.1)
    dance, lse = reference.info_nce(q64, p64, p64, temperature=0.2, weighting="dance")
    want = moco.mean() + dance.mean() + 0.1 * lse.mean()
    rq, rp = torch.autograd.grad(want, (q64, p64))
    # The value: each row's (loss, lse) within its rounding model, then the means and sums.
    b, u = q.shape[0], unit_roundoff(torch.float32)
    moco_kw, dance_kw = dict(temperature=0.1, weighting="none"), dict(temperature=0.2, weighting="dance")
    rows_moco = first_order_error_bound(functools.partial(info_nce_rows, **moco_kw), (q, pos, queue))
    rows_dance = first_order_error_bound(functools.partial(info_nce_rows, **dance_kw), (q, pos, pos))
    terms = (moco.abs().sum() + dance.abs().sum() + 0.1 * lse.abs().sum()).detach() / b
    value_bound = SECOND_ORDER * (rows_moco[0].sum() + rows_dance[0].sum() + 0.1 * rows_dance[1].sum()) / b \
        + (accumulation(b) + 4 * u) * terms
    assert_within(got.detach(), want.detach(), value_bound, "value")
    # Gradients: the sum of the two calls' bounds (pos is the second call's k and its queue) and
    # the additions of the contributions.
    mean = torch.full((b,), 1.0 / b, dtype=torch.float64)
    mq, mk, _ = info_nce_gradient_bounds(q, pos, queue, mean, 0 * mean, **moco_kw)
    dq, dk, dqueue = info_nce_gradient_bounds(q, pos, pos, mean, 0.1 * mean, **dance_kw)
    assert_within(gq, rq, SECOND_ORDER * (mq + dq) + 2 * u * rq.abs(), "grad q")
    assert_within(gp, rp, SECOND_ORDER * (mk + dk + dqueue) + 3 * u * rp.abs(), "grad k")


def test_dance_weights_all_beyond_cutoff_are_uniform(generator):
    """Every negative beyond the upper cutoff: all weights sit at the 1e-45 floor, so they are
    uniform (1/K) after normalisation; and with no upper cutoff nothing is cut."""
    b, k, d = 6, 700, 16
    q, pos, _ = moco_inputs(b, k, d, generator, torch.float64)
    queue = F.normalize(-q[torch.arange(k) % b] + 0.05 * torch.randn(k, d, generator=generator, dtype=torch.float64), dim=1)
    s = q @ queue.t()
    assert (s < -0.5).any(dim=1).all()
    for dtype in (torch.float64, torch.float32):
        args = (q.to(dtype), pos.to(dtype), queue.to(dtype))
        for kw in (dict(upper_cutoff=0.6), dict(upper_cutoff=float("inf"))):
            loss, lse = ops.info_nce(*args, weighting="dance", temperature=0.05, **kw)
            want_loss, want_lse = ref64(*args, weighting="dance", temperature=0.05, **kw)
            bound = rows_error_bound(*args, dtype, weighting="dance", temperature=0.05, **kw)
            assert_within(lse, want_lse, bound[1], f"{dtype} {kw} lse")
            assert_within(loss, want_loss, bound[0], f"{dtype} {kw} loss")
    w = reference.dance_weights(s, d, 0.5, 0.6)
    torch.testing.assert_close(w[s < 1 - 0.5 * 0.6**2].view(-1)[:5], torch.full((5,), 1.0 / k, dtype=torch.float64))


def test_results_are_deterministic_and_non_contiguous_inputs_work(generator):
    q, pos, queue = moco_inputs(40, 1300, 24, generator)
    first = ops.info_nce(q, pos, queue, weighting="dance")
    assert all(torch.equal(a, b) for a, b in zip(first, ops.info_nce(q, pos, queue, weighting="dance")))
    wide = torch.randn(1300, 48, generator=generator)
    wide[:, ::2] = queue
    strided = wide[:, ::2]
    qt = q.t().contiguous().t()
    assert not strided.is_contiguous() and not qt.is_contiguous()
    # Other strides may vectorise differently: each result within its rounding model of float64.
    want = ref64(q, pos, queue, weighting="dance")
    bound = rows_error_bound(q, pos, queue, weighting="dance", temperature=0.07)
    for got, contiguous, w, b, name in zip(ops.info_nce(qt, pos, strided, weighting="dance"), first, want, bound,
                                           ("loss", "lse")):
        assert_within(got, w, b, f"strided {name}")
        assert_within(contiguous, w, b, f"contiguous {name}")


def test_empty_and_degenerate_inputs(generator):
    q, pos, queue = moco_inputs(3, 5, 4, generator, torch.float64)
    # B = 0: empty outputs.
    loss, lse = ops.info_nce(q[:0], pos[:0], queue)
    assert loss.shape == (0,) and lse.shape == (0,)
    # K = 0: only the positive: loss 0, lse = s+ / T, gradients from the positive alone (none).
    # Exact where the kernel's arithmetic is: loss = log1p(0) = 0; the gradients' row factor is
    # expm1(-0) + exp(-0) = 1 exactly, times 1 / T = 2. lse = s+ / T: two float64 dot products of
    # D = 4 terms in their own orders, each within gamma_4 sum |q| |pos|, then / T.
    qg, pg, kg = q.clone().requires_grad_(), pos.clone().requires_grad_(), queue[:0].clone().requires_grad_()
    dot_bound = 2 * gamma(4, torch.float64) * (q.abs() * pos.abs()).sum(1) / 0.5
    for weighting in WEIGHTINGS:
        loss, lse = ops.info_nce(qg, pg, kg, temperature=0.5, weighting=weighting)
        torch.testing.assert_close(loss, torch.zeros(3, dtype=torch.float64), rtol=0, atol=0)
        assert_within(lse.detach(), (q * pos).sum(1) / 0.5, dot_bound, f"{weighting} lse, K = 0")
        gq, gk, gqueue = torch.autograd.grad(loss.sum() + lse.sum(), (qg, pg, kg))
        torch.testing.assert_close(gq, pos / 0.5, rtol=0, atol=0)
        torch.testing.assert_close(gk, q / 0.5, rtol=0, atol=0)
        assert gqueue.shape == (0, 4)
    # D = 0: every logit is 0, so lse = log(K + 1): the kernel's log1p(5) and torch's log(6), each
    # within an ulp of log 6.
    loss, lse = ops.info_nce(q[:, :0], pos[:, :0], queue[:, :0])
    log6 = torch.log(torch.tensor(6.0, dtype=torch.float64)).item()
    assert_within(lse, torch.full((3,), log6, dtype=torch.float64), 2 * torch.finfo(torch.float64).eps * log6, "D = 0")


def test_thread_count_does_not_change_results(generator):
    q, pos, queue = moco_inputs(3, 2100, 16, generator, torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.info_nce(q, pos, queue, weighting="dance")
    finally:
        torch.set_num_threads(threads)
    # Another split of K over threads sums in another order: each run within the model of the exact
    # values, so the two within twice that (rows_error_bound's float64 doubling).
    bound = rows_error_bound(q, pos, queue, torch.float64, weighting="dance", temperature=0.07)
    for a, b, bd in zip(one, ops.info_nce(q, pos, queue, weighting="dance"), bound):
        assert_within(a, b, bd)


def _bad(**overrides):
    g = torch.Generator().manual_seed(0)
    args = dict(q=torch.randn(3, 4, generator=g), k=torch.randn(3, 4, generator=g), queue=torch.randn(5, 4, generator=g))
    kw = dict(temperature=0.07, weighting="none", lower_cutoff=0.5, upper_cutoff=1.4)
    for key, value in overrides.items():
        (args if key in args else kw)[key] = value
    return args, kw


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(q=torch.randn(3)), r"q must be a 2-D tensor"),
        (dict(k=torch.randn(4, 4)), r"q and k must have the same shape"),
        (dict(queue=torch.randn(5, 3)), r"queue must have the feature dimension D of q"),
        (dict(queue=torch.randn(2, 5, 4)), r"queue must be a 2-D tensor"),
        (dict(q=torch.randint(0, 3, (3, 4))), r"q must be .*float"),
        (dict(k=torch.randn(3, 4, dtype=torch.float64)), r"q and k must have the same dtype"),
        (dict(queue=torch.randn(5, 4, device="meta")), r"q and queue must be on the same device"),
        (dict(temperature=0.0), r"temperature must be finite and > 0"),
        (dict(temperature=-1.0), r"temperature must be finite and > 0"),
        (dict(temperature=float("nan")), r"temperature must be finite and > 0"),
        (dict(weighting="Dance"), r'weighting must be "none" or "dance", got "Dance"'),
        (dict(lower_cutoff=0.0), r"lower_cutoff must be finite and > 0"),
        (dict(upper_cutoff=0.4), r"upper_cutoff must be >= lower_cutoff"),
        (dict(upper_cutoff=float("nan")), r"upper_cutoff must be >= lower_cutoff"),
    ],
)
def test_bad_arguments_name_the_argument(overrides, pattern):
    args, kw = _bad(**overrides)
    with pytest.raises(RuntimeError, match=pattern):
        ops.info_nce(**args, **kw)


@pytest.mark.parametrize("name", ["q", "k", "queue"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_non_finite_inputs_name_the_argument(name, value, weighting):
    args, kw = _bad(weighting=weighting)
    args[name] = args[name].clone()
    args[name][1, 2] = value
    with pytest.raises(RuntimeError, match=rf"{name} contains non-finite values"):
        ops.info_nce(**args, **kw)
    with pytest.raises(RuntimeError, match=rf"{name} contains non-finite values"):
        ops.info_nce(**{n: t.requires_grad_() for n, t in args.items()}, **kw)


def test_overflowing_logits_raise():
    # Finite inputs whose logits |s| / T ~ 1e39 exceed float32. (Logits of ~1e31 are finite: they
    # used to come out non-finite only because the forward compared a rounded logit with an
    # unrounded one, an error of ~ulp(1e31) = 1e24 in an exponent; math/info_nce.h's
    # nce_logit_offset.)
    args, kw = _bad(temperature=1e-9)
    args["q"] = args["q"] * 1e30
    with pytest.raises(RuntimeError, match=r"logits overflowed .* L2-normalised"):
        ops.info_nce(**args, **kw)


# ---- CUDA (skipped without a GPU; the same kernels run in CI through the emulation) ---------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("b,k,d", [(1, 1, 8), (3, 5000, 128), (130, 700, 64), (1030, 4099, 128)])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(b, k, d, weighting, dtype, generator):
    q, pos, queue = moco_inputs(b, k, d, generator, dtype)
    g = torch.randn(b, generator=generator, dtype=dtype)
    kw = dict(weighting=weighting, temperature=0.05)
    ones = torch.ones(b, dtype=torch.float64)
    double = 2 if dtype == torch.float64 else 1  # the float64 oracle obeys the same model
    values = double * SECOND_ORDER * info_nce_value_bounds(q, pos, queue, dtype=dtype, **kw)
    grads_bound = [double * SECOND_ORDER * x for x in info_nce_gradient_bounds(q, pos, queue, g, ones, dtype=dtype, **kw)]
    for needs in [(True, True, False), (True, True, True)]:
        ins64 = [t.double().requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
        loss64, lse64 = reference.info_nce(*ins64, **kw)
        want = [loss64.detach(), lse64.detach(),
                *torch.autograd.grad((loss64 * g.double()).sum() + lse64.sum(), [t for t in ins64 if t.requires_grad])]
        bounds = [values[0], values[1], *(x for x, n in zip(grads_bound, needs) if n)]
        for dev in ("cpu", "cuda"):  # each against float64 within its own bound (other sum orders)
            ins = [t.to(dev).requires_grad_(n) for t, n in zip((q, pos, queue), needs)]
            loss, lse = ops.info_nce(*ins, **kw)
            grads = torch.autograd.grad((loss * g.to(dev)).sum() + lse.sum(), [t for t in ins if t.requires_grad])
            for got, w, bound in zip((loss, lse, *grads), want, bounds):
                assert_within(got.detach().cpu(), w, bound, f"{dev} {needs}")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_cuda_half_precision_error_within_twice_torch(dtype, weighting, generator):
    q, pos, queue = (t.to(dtype).cuda() for t in moco_inputs(256, 4096, 128, generator))
    want = ref64(q, pos, queue, weighting=weighting)
    ours = ops.info_nce(q, pos, queue, weighting=weighting)
    theirs = reference.info_nce(q, pos, queue, weighting=weighting)
    for o, t, w in zip(ours, theirs, want):
        assert o.dtype == dtype
        assert (o.double() - w).abs().max() <= 2 * (t.double() - w).abs().max() + torch.finfo(dtype).eps * w.abs().max()


@requires_cuda
@pytest.mark.cuda
def test_cuda_runs_on_current_stream(generator):
    q, pos, queue = (t.cuda() for t in moco_inputs(64, 3000, 64, generator))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        loss, lse = ops.info_nce(q, pos, queue)
    s.synchronize()
    want = ref64(q.cpu(), pos.cpu(), queue.cpu())
    bound = SECOND_ORDER * info_nce_value_bounds(q.cpu(), pos.cpu(), queue.cpu(), temperature=0.07, weighting="none")
    assert_within(loss.cpu(), want[0], bound[0], "loss")
    assert_within(lse.cpu(), want[1], bound[1], "lse")
