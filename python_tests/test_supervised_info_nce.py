"""supervised_info_nce (CPU kernels): values, gradients, rows without positives, registration,
compile, edge cases and errors.

The oracle is diva_ext.reference.supervised_info_nce in float64: explicit [B, K] logits and
positive mask (the SupCon form, mean outside the log), independent of the fused kernels.
Tolerances: supervised_info_nce_error_model.py.
"""

import pytest
import torch
from torch.library import opcheck

from diva_ext import ops, reference
from diva_ext._registrations.supervised_info_nce import STATS_COLUMNS

from supervised_info_nce_cases import gradient_bounds, labelled_inputs, ref64, rows_error_bound
from supervised_info_nce_error_model import positive_mask
from tolerances import accumulation, assert_within, unit_roundoff

# Odd sizes: single rows, a single memory row, K around the kernel's 512-row tile, D = 1.
SIZES = [(1, 1, 8), (1, 1025, 32), (2, 3, 1), (5, 511, 16), (17, 513, 64), (130, 700, 128)]


def public_op(q, labels, memory, memory_labels, *, temperature):
    """The registered op itself (its autograd recomputes everything), bypassing the wrapper."""
    return torch.ops.diva_ext.supervised_info_nce(q, labels, memory, memory_labels, temperature)


@pytest.mark.parametrize("b,k,d", SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_match_float64_reference(b, k, d, dtype, generator):
    q, labels, memory, memory_labels = labelled_inputs(b, k, d, generator, dtype)
    for temperature in (0.07, 0.5):
        loss, lse, positives = ops.supervised_info_nce(q, labels, memory, memory_labels, temperature=temperature,
                                                       return_positives=True)
        want_loss, want_lse = ref64(q, labels, memory, memory_labels, temperature=temperature)
        assert loss.shape == (b,) and lse.shape == (b,) and loss.dtype == dtype and lse.dtype == dtype
        bound = rows_error_bound(q, labels, memory, memory_labels, dtype, temperature=temperature)
        assert_within(loss, want_loss, bound[0], f"{dtype} loss")
        assert_within(lse, want_lse, bound[1], f"{dtype} lse")
        assert torch.equal(positives, positive_mask(labels, memory_labels).sum(1).long())
        # The public op (no positives) gives the same values.
        same = public_op(q, labels, memory, memory_labels, temperature=temperature)
        assert torch.equal(same[0], loss) and torch.equal(same[1], lse)


NEEDS = [(True, False), (False, True), (True, True)]
# Every combination at two small sizes; the paths that differ (O saved, tiles recomputed for q
# and/or the memory) at a size with several row blocks and K-chunks.
GRAD_CASES = [(n, s) for n in NEEDS for s in [(1, 1, 3), (3, 1030, 17), (70, 600, 64)]]


@pytest.mark.parametrize("needs,size", GRAD_CASES,
                         ids=lambda v: "".join("QM"[i] if x else "_" for i, x in enumerate(v))
                         if isinstance(v[0], bool) else "x".join(map(str, v)))
def test_float64_gradients_match_reference(needs, size, generator):
    b, k, d = size
    q, labels, memory, memory_labels = labelled_inputs(b, k, d, generator, torch.float64)
    g = torch.randn(b, generator=generator, dtype=torch.float64)
    h = torch.randn(b, generator=generator, dtype=torch.float64)
    kw = dict(temperature=0.1)
    grads = {}
    for name, fn in (("wrapper", ops.supervised_info_nce), ("public_op", public_op),
                     ("reference", reference.supervised_info_nce)):
        ins = [t.clone().requires_grad_(n) for t, n in zip((q, memory), needs)]
        loss, lse = fn(ins[0], labels, ins[1], memory_labels, **kw)
        grads[name] = torch.autograd.grad((loss * g).sum() + (lse * h).sum(), [t for t in ins if t.requires_grad])
    bounds = [x for x, n in zip(gradient_bounds(q, labels, memory, memory_labels, g, h, torch.float64, **kw), needs)
              if n]
    for name in ("wrapper", "public_op"):
        for got, want, bound in zip(grads[name], grads["reference"], bounds):
            assert_within(got, want, bound, name)


@pytest.mark.parametrize("needs", NEEDS, ids=lambda n: "".join("QM"[i] if x else "_" for i, x in enumerate(n)))
def test_float32_gradients_match_reference(needs, generator):
    b, k, d = 64, 1100, 128
    q, labels, memory, memory_labels = labelled_inputs(b, k, d, generator)
    ins = [t.clone().requires_grad_(n) for t, n in zip((q, memory), needs)]
    loss, lse = ops.supervised_info_nce(ins[0], labels, ins[1], memory_labels)
    got = torch.autograd.grad(loss.mean() + 0.5 * lse.mean(), [t for t in ins if t.requires_grad])
    ins64 = [t.double().requires_grad_(n) for t, n in zip((q, memory), needs)]
    loss64, lse64 = reference.supervised_info_nce(ins64[0], labels, ins64[1], memory_labels)
    want = torch.autograd.grad(loss64.mean() + 0.5 * lse64.mean(), [t for t in ins64 if t.requires_grad])
    mean = torch.full((b,), 1.0 / b, dtype=torch.float64)
    bounds = gradient_bounds(q, labels, memory, memory_labels, mean, 0.5 * mean, temperature=0.07)
    for a, w, bound in zip(got, want, [x for x, n in zip(bounds, needs) if n]):
        assert_within(a, w, bound, f"float32 grad {needs}")


@pytest.mark.parametrize("needs", NEEDS, ids=lambda n: "".join("QM"[i] if x else "_" for i, x in enumerate(n)))
def test_gradcheck_float64(needs, generator):
    q, labels, memory, memory_labels = labelled_inputs(4, 9, 5, generator, torch.float64, classes=3)
    ins = [t.clone().requires_grad_(n) for t, n in zip((q, memory), needs)]
    for fn in (ops.supervised_info_nce, public_op):
        assert torch.autograd.gradcheck(lambda a, m: fn(a, labels, m, memory_labels, temperature=0.3), ins)


def test_in_batch_positives_reach_the_batch(generator):
    """memory = the batch itself (in-batch SupCon, self included): both uses get gradients."""
    q, labels, _, _ = labelled_inputs(33, 1, 24, generator, torch.float64, classes=4)
    a = q.clone().requires_grad_()
    loss, lse = ops.supervised_info_nce(a, labels, a, labels, temperature=0.2)
    (got,) = torch.autograd.grad(loss.mean(), (a,))
    r = q.clone().requires_grad_()
    want, _ = reference.supervised_info_nce(r, labels, r, labels, temperature=0.2)
    (rg,) = torch.autograd.grad(want.mean(), (r,))
    mean = torch.full((33,), 1.0 / 33, dtype=torch.float64)
    bq, bm = gradient_bounds(q, labels, q, labels, mean, 0 * mean, torch.float64, temperature=0.2)
    assert_within(got, rg, bq + bm + unit_roundoff(torch.float64) * rg.abs(), "grad of the batch")


def test_detached_memory_backward_does_not_read_the_memory(generator):
    """With a detached memory the forward saves O and the mean positive rows, so the memory (and
    its labels) may change before backward (a FIFO memory enqueues in place)."""
    q, labels, memory, memory_labels = labelled_inputs(9, 600, 16, generator, torch.float64)
    live, live_labels = memory.clone(), memory_labels.clone()
    qg = q.clone().requires_grad_()
    loss, lse = ops.supervised_info_nce(qg, labels, live, live_labels)
    live.copy_(torch.randn_like(live))
    live_labels.random_(0, 3)
    (got,) = torch.autograd.grad(loss.sum() + lse.sum(), (qg,))
    r = q.clone().requires_grad_()
    want_loss, want_lse = reference.supervised_info_nce(r, labels, memory, memory_labels)
    (want,) = torch.autograd.grad(want_loss.sum() + want_lse.sum(), (r,))
    ones = torch.ones(9, dtype=torch.float64)
    bq, _ = gradient_bounds(q, labels, memory, memory_labels, ones, ones, torch.float64, temperature=0.07)
    assert_within(got, want, bq, "grad q")


def test_rows_without_positives_are_zero_and_reported(generator):
    q, _, memory, memory_labels = labelled_inputs(6, 40, 8, generator, torch.float64, classes=3)
    labels = torch.tensor([0, 5, 1, 5, 2, -1])  # 5 and -1 are not in the memory
    qg = q.clone().requires_grad_()
    loss, lse, positives = ops.supervised_info_nce(qg, labels, memory, memory_labels, return_positives=True)
    missing = torch.tensor([False, True, False, True, False, True])
    assert torch.equal(positives == 0, missing)
    assert torch.equal(loss[missing], torch.zeros(3, dtype=torch.float64))
    (gq,) = torch.autograd.grad(loss.sum(), (qg,))
    assert torch.equal(gq[missing], torch.zeros(3, 8, dtype=torch.float64))
    assert gq[~missing].abs().sum() > 0
    # Their lse is still an ordinary log-sum-exp with its gradient.
    want_loss, want_lse = reference.supervised_info_nce(q, labels, memory, memory_labels)
    bound = rows_error_bound(q, labels, memory, memory_labels, torch.float64, temperature=0.07)
    assert_within(lse, want_lse, bound[1], "lse")
    (gl,) = torch.autograd.grad(ops.supervised_info_nce(qg, labels, memory, memory_labels)[1].sum(), (qg,))
    assert (gl[missing].abs().sum(1) > 0).all()


@pytest.mark.parametrize("temperature", [0.01, 1e-3])
def test_low_temperature_float32_does_not_overflow(temperature, generator):
    # Same-class cosines ~0.99, logits near 1/T: e^88.8 already overflows float32, so only a
    # running maximum works.
    q, labels, memory, memory_labels = labelled_inputs(40, 1500, 128, generator, spread=0.01)
    assert torch.exp(torch.tensor(1 / temperature, dtype=torch.float32)).isinf()
    qg = q.clone().requires_grad_()
    loss, lse = ops.supervised_info_nce(qg, labels, memory, memory_labels, temperature=temperature)
    (gq,) = torch.autograd.grad(loss.sum() + 0.5 * lse.sum(), (qg,))
    assert torch.isfinite(loss).all() and torch.isfinite(gq).all() and lse.max() > 88.8
    q64 = q.double().requires_grad_()
    want_loss, want_lse = reference.supervised_info_nce(q64, labels, memory.double(), memory_labels,
                                                        temperature=temperature)
    (rq,) = torch.autograd.grad(want_loss.sum() + 0.5 * want_lse.sum(), (q64,))
    bound = rows_error_bound(q, labels, memory, memory_labels, temperature=temperature)
    assert_within(loss, want_loss.detach(), bound[0], "loss")
    assert_within(lse, want_lse.detach(), bound[1], "lse")
    ones = torch.ones(40, dtype=torch.float64)
    bq, _ = gradient_bounds(q, labels, memory, memory_labels, ones, 0.5 * ones, temperature=temperature)
    assert_within(gq, rq, bq, "grad q")


def test_backward_op_returns_only_requested_gradients(generator):
    q, labels, memory, memory_labels = labelled_inputs(4, 9, 6, generator, torch.float64, classes=2)
    g = torch.ones(4, dtype=torch.float64)
    gq, gm = torch.ops.diva_ext._supervised_info_nce_backward(g, 0 * g, q, labels, memory, memory_labels,
                                                              None, None, None, 0.07, False, True)
    assert gq.numel() == 0 and gm.shape == memory.shape
    loss, lse, positives, stats, o = torch.ops.diva_ext._supervised_info_nce_forward(
        q, labels, memory, memory_labels, 0.07, True)
    assert stats.shape == (4, STATS_COLUMNS) and o.shape == (2, 4, 6) and positives.dtype == torch.int64
    # O from the forward and the recomputed path: each within the model of the float64 reference.
    with_o = torch.ops.diva_ext._supervised_info_nce_backward(g, 0 * g, q, labels, memory, memory_labels,
                                                              stats, positives, o, 0.07, True, False)
    without = torch.ops.diva_ext._supervised_info_nce_backward(g, 0 * g, q, labels, memory, memory_labels,
                                                               None, None, None, 0.07, True, False)
    q64 = q.clone().requires_grad_()
    (want,) = torch.autograd.grad(reference.supervised_info_nce(q64, labels, memory, memory_labels)[0].sum(), (q64,))
    bound = gradient_bounds(q, labels, memory, memory_labels, g, 0 * g, torch.float64, temperature=0.07)[0]
    assert_within(with_o[0], want, bound, "saved O")
    assert_within(without[0], want, bound, "recomputed")


def test_opcheck(generator):
    q, labels, memory, memory_labels = labelled_inputs(5, 13, 6, generator)
    q.requires_grad_()
    opcheck(torch.ops.diva_ext.supervised_info_nce.default,
            (q, labels, memory.clone().requires_grad_(), memory_labels, 0.1))
    opcheck(torch.ops.diva_ext.supervised_info_nce.default, (q, labels, memory, memory_labels, 0.1))
    for save_o in (True, False):
        opcheck(torch.ops.diva_ext._supervised_info_nce_forward.default,
                (q, labels, memory, memory_labels, 0.1, save_o))
    _, _, positives, stats, o = torch.ops.diva_ext._supervised_info_nce_forward(
        q.detach(), labels, memory, memory_labels, 0.1, True)
    g = torch.randn(5, generator=generator)
    for saved in ((stats, positives, o), (stats, positives, None), (None, None, None)):
        opcheck(torch.ops.diva_ext._supervised_info_nce_backward.default,
                (g, g.flip(0), q.detach(), labels, memory, memory_labels) + saved + (0.1, True, True))


def test_torch_compile_fullgraph(generator):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, labels, memory, memory_labels):
        loss, lse = ops.supervised_info_nce(q, labels, memory, memory_labels, temperature=0.1)
        return loss.mean() + 0.1 * lse.mean()

    b = 11
    q, labels, memory, memory_labels = labelled_inputs(b, 600, 32, generator)
    for needs_memory in (False, True):
        qg, mg = q.clone().requires_grad_(), memory.clone().requires_grad_(needs_memory)
        got = step(qg, labels, mg, memory_labels)
        grads = torch.autograd.grad(got, (qg, mg) if needs_memory else (qg,))
        q64, m64 = q.double().requires_grad_(), memory.double().requires_grad_(needs_memory)
        loss, lse = reference.supervised_info_nce(q64, labels, m64, memory_labels, temperature=0.1)
        want = loss.mean() + 0.1 * lse.mean()
        wgrads = torch.autograd.grad(want, (q64, m64) if needs_memory else (q64,))
        rows = rows_error_bound(q, labels, memory, memory_labels, temperature=0.1)
        u = unit_roundoff(torch.float32)
        terms = (loss.abs().sum() + 0.1 * lse.abs().sum()).detach() / b
        value_bound = (rows[0].sum() + 0.1 * rows[1].sum()) / b + (accumulation(b) + 4 * u) * terms
        assert_within(got.detach(), want.detach(), value_bound, "value")
        mean = torch.full((b,), 1.0 / b, dtype=torch.float64)
        bounds = gradient_bounds(q, labels, memory, memory_labels, mean, 0.1 * mean, temperature=0.1)
        for a, w, bound in zip(grads, wgrads, bounds):
            assert_within(a, w, bound + 2 * u * w.abs(), f"grad, memory needs grad: {needs_memory}")


def test_non_contiguous_inputs_and_determinism(generator):
    q, labels, memory, memory_labels = labelled_inputs(40, 1300, 24, generator)
    first = ops.supervised_info_nce(q, labels, memory, memory_labels)
    assert all(torch.equal(a, b) for a, b in zip(first, ops.supervised_info_nce(q, labels, memory, memory_labels)))
    wide = torch.randn(1300, 48, generator=generator)
    wide[:, ::2] = memory
    strided = wide[:, ::2]
    qt = q.t().contiguous().t()
    wide_labels = torch.zeros(2600, dtype=torch.int64)
    wide_labels[::2] = memory_labels
    strided_labels = wide_labels[::2]
    assert not strided.is_contiguous() and not qt.is_contiguous() and not strided_labels.is_contiguous()
    want = ref64(q, labels, memory, memory_labels)
    bound = rows_error_bound(q, labels, memory, memory_labels, temperature=0.07)
    got = ops.supervised_info_nce(qt, labels, strided, strided_labels)
    for g_, c, w, b_, name in zip(got, first, want, bound, ("loss", "lse")):
        assert_within(g_, w, b_, f"strided {name}")
        assert_within(c, w, b_, f"contiguous {name}")


def test_thread_count_does_not_change_results_beyond_rounding(generator):
    q, labels, memory, memory_labels = labelled_inputs(3, 2100, 16, generator, torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.supervised_info_nce(q, labels, memory, memory_labels)
    finally:
        torch.set_num_threads(threads)
    bound = rows_error_bound(q, labels, memory, memory_labels, torch.float64, temperature=0.07)
    for a, b_, bd in zip(one, ops.supervised_info_nce(q, labels, memory, memory_labels), bound):
        assert_within(a, b_, bd)


def test_empty_and_degenerate_inputs(generator):
    q, labels, memory, memory_labels = labelled_inputs(3, 5, 4, generator, torch.float64, classes=2)
    # B = 0: empty outputs.
    loss, lse = ops.supervised_info_nce(q[:0], labels[:0], memory, memory_labels)
    assert loss.shape == (0,) and lse.shape == (0,)
    # K = 0: no memory, so no positives: loss 0, lse = -inf (an empty log-sum-exp), zero gradients.
    qg, mg = q.clone().requires_grad_(), memory[:0].clone().requires_grad_()
    loss, lse, positives = ops.supervised_info_nce(qg, labels, mg, memory_labels[:0], return_positives=True)
    assert torch.equal(loss, torch.zeros(3, dtype=torch.float64)) and torch.equal(positives, torch.zeros(3).long())
    assert torch.equal(lse, torch.full((3,), -float("inf"), dtype=torch.float64))
    gq, gm = torch.autograd.grad(loss.sum(), (qg, mg))
    assert torch.equal(gq, torch.zeros_like(q)) and gm.shape == (0, 4)
    # D = 0: every logit is 0, so lse = log K and loss = log K for rows with positives.
    loss, lse = ops.supervised_info_nce(q[:, :0], labels, memory[:, :0], memory_labels)
    log_k = torch.log(torch.tensor(5.0, dtype=torch.float64))
    torch.testing.assert_close(lse, log_k.expand(3))
    has = positive_mask(labels, memory_labels).sum(1) > 0
    torch.testing.assert_close(loss, torch.where(has, log_k, torch.zeros((), dtype=torch.float64)))


def _bad(**overrides):
    g = torch.Generator().manual_seed(0)
    args = dict(q=torch.randn(3, 4, generator=g), labels=torch.tensor([0, 1, 2]),
                memory=torch.randn(5, 4, generator=g), memory_labels=torch.tensor([0, 1, 1, 2, 0]))
    kw = dict(temperature=0.07)
    for key, value in overrides.items():
        (args if key in args else kw)[key] = value
    return args, kw


BAD = [
    (dict(q=torch.randn(3)), r"q must be a 2-D tensor"),
    (dict(memory=torch.randn(2, 5, 4)), r"memory must be a 2-D tensor"),
    (dict(memory=torch.randn(5, 3)), r"memory must have the feature dimension D of q"),
    (dict(q=torch.randint(0, 3, (3, 4))), r"q must be .*float"),
    (dict(memory=torch.randn(5, 4, dtype=torch.float64)), r"q and memory must have the same dtype"),
    (dict(memory=torch.randn(5, 4, device="meta")), r"q and memory must be on the same device"),
    (dict(labels=torch.tensor([0, 1, 2], dtype=torch.int32)), r"labels must be int64, got Int"),
    (dict(labels=torch.tensor([0.0, 1.0, 2.0])), r"labels must be int64, got Float"),
    (dict(labels=torch.tensor([0, 1])), r"labels must have one entry per row of q \(3\), got 2"),
    (dict(labels=torch.zeros(3, 1, dtype=torch.int64)), r"labels must be a 1-D tensor"),
    (dict(memory_labels=torch.tensor([0, 1, 1, 2])), r"memory_labels must have one entry per row of memory \(5\), got 4"),
    (dict(memory_labels=torch.tensor([0, 1, 1, 2, 0], dtype=torch.int32)), r"memory_labels must be int64"),
    (dict(labels=torch.tensor([0, 1, 2], device="meta")), r"q and labels must be on the same device"),
    (dict(temperature=0.0), r"temperature must be finite and > 0"),
    (dict(temperature=-1.0), r"temperature must be finite and > 0"),
    (dict(temperature=float("nan")), r"temperature must be finite and > 0"),
    (dict(temperature=float("inf")), r"temperature must be finite and > 0"),
]


@pytest.mark.parametrize("overrides,pattern", BAD)
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "grad"])
def test_bad_arguments_name_the_argument(overrides, pattern, grad):
    args, kw = _bad(**overrides)
    if grad and args["q"].dtype.is_floating_point:
        args["q"].requires_grad_()
    with pytest.raises(RuntimeError, match=pattern):
        ops.supervised_info_nce(**args, **kw)


@pytest.mark.parametrize("name", ["q", "memory"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_name_the_argument(name, value):
    args, kw = _bad()
    args[name] = args[name].clone()
    args[name][1, 2] = value
    with pytest.raises(RuntimeError, match=rf"{name} contains non-finite values"):
        ops.supervised_info_nce(**args, **kw)
    args["q"].requires_grad_()
    with pytest.raises(RuntimeError, match=rf"{name} contains non-finite values"):
        ops.supervised_info_nce(**args, **kw)


def test_overflowing_logits_raise():
    args, kw = _bad(temperature=1e-9)
    args["q"] = args["q"] * 1e30
    with pytest.raises(RuntimeError, match=r"logits overflowed .* L2-normalised"):
        ops.supervised_info_nce(**args, **kw)
