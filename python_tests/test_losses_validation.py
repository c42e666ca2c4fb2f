"""Every loss rejects bad hyperparameters and bad inputs with an error naming the argument, and
every loss gives the same result on an empty batch: a zero scalar that keeps the graph, so
backward gives zero gradients (pytorch-metric-learning's "zero loss", ``sum(embeddings * 0)``).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from diva_ext.losses import DaNCELoss, InfoNCELoss, MarginLoss
from diva_ext.losses.adversarial import DIVA_PAIRS, AdversarialSeparation
from validation_cases import (BAD_COUNTS, BAD_CUTOFFS, BAD_NONNEGATIVE_REALS, BAD_POSITIVE_REALS, GOOD_CUTOFFS,
                              names)

D = 5
TASKS = sorted({task for pair in DIVA_PAIRS for task in pair})
NUM_CLASSES = 3


def _unit(generator, rows, dim=D):
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1)


def _indices(generator, high, count):
    return torch.randint(0, high, (count,), generator=generator)


# ---- the losses, each with valid inputs of batch size b ---------------------------------------

def margin_inputs(generator, b, ref_rows=None):
    t = 2 * b + 1
    kw = {"embeddings": _unit(generator, b).requires_grad_(), "labels": torch.arange(b) % NUM_CLASSES}
    rows = b if ref_rows is None else ref_rows
    kw["indices_tuple"] = tuple(_indices(generator, max(hi, 1), t if b and rows else 0) for hi in (b, rows, rows))
    if ref_rows is not None:
        kw["ref_emb"] = _unit(generator, ref_rows).requires_grad_()
        kw["ref_labels"] = torch.arange(ref_rows) % NUM_CLASSES
    return kw


def margin_ref_inputs(generator, b):
    return margin_inputs(generator, b, ref_rows=b + 2)


def nce_inputs(generator, b, queue_rows=11):
    return {"query": _unit(generator, b).requires_grad_(), "key": _unit(generator, b),
            "queue": _unit(generator, queue_rows)}


def adversarial_inputs(generator, b):
    return {"heads": {task: _unit(generator, b).requires_grad_() for task in TASKS}}


# name -> (make the loss, make its inputs, its [N, D] float arguments)
LOSSES = {
    "MarginLoss": (lambda: MarginLoss(NUM_CLASSES), margin_inputs, ["embeddings"]),
    "MarginLoss-ref": (lambda: MarginLoss(NUM_CLASSES, nu=0.1), margin_ref_inputs, ["embeddings", "ref_emb"]),
    "MarginLoss-shared-beta": (lambda: MarginLoss(NUM_CLASSES, class_specific_beta=False), margin_inputs,
                               ["embeddings"]),
    "InfoNCELoss-fused": (lambda: InfoNCELoss(ops="fused"), nce_inputs, ["query", "key", "queue"]),
    "InfoNCELoss-reference": (lambda: InfoNCELoss(ops="reference"), nce_inputs, ["query", "key", "queue"]),
    "DaNCELoss-fused": (lambda: DaNCELoss(ops="fused"), nce_inputs, ["query", "key", "queue"]),
    "DaNCELoss-reference": (lambda: DaNCELoss(ops="reference"), nce_inputs, ["query", "key", "queue"]),
    "AdversarialSeparation": (lambda: AdversarialSeparation(dim=D, hidden=4).double(), adversarial_inputs,
                              [f"heads.{task}" for task in TASKS]),
}
MATRIX_ARGUMENTS = [(loss, arg) for loss, (_, _, args) in LOSSES.items() for arg in args]


def _shown(arg):
    """How a message names the argument: heads.shared -> heads['shared']."""
    outer, _, inner = arg.partition(".")
    return f"{outer}[{inner!r}]" if inner else outer


def _replace(kw, arg, fn):
    kw = dict(kw)
    outer, _, inner = arg.partition(".")
    if inner:
        kw[outer] = {**kw[outer], inner: fn(kw[outer][inner])}
    else:
        kw[outer] = fn(kw[outer])
    return kw


def _run(loss_name, generator, change=None, b=7):
    make, inputs, _ = LOSSES[loss_name]
    kw = inputs(generator, b)
    if change is not None:
        kw = change(kw)
    return make()(**kw)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_valid_inputs_pass_the_checks(loss, generator):
    # The control for the tests below: only the one changed argument makes a call fail.
    value = _run(loss, generator)
    assert value.shape == () and torch.isfinite(value)


# ---- [N, D] float arguments -------------------------------------------------------------------

@pytest.mark.parametrize("loss,arg", MATRIX_ARGUMENTS)
@pytest.mark.parametrize("bad", ["1-D", "3-D", "integer", "bool", "not a tensor"])
def test_matrix_arguments_must_be_2d_floating_tensors(loss, arg, bad, generator):
    change = {"1-D": lambda t: t.detach()[0], "3-D": lambda t: t.detach()[None],
              "integer": lambda t: (t.detach() * 10).long(), "bool": lambda t: t.detach() > 0,
              "not a tensor": lambda t: t.tolist()}[bad]
    with pytest.raises(ValueError, match=names(_shown(arg))):
        _run(loss, generator, lambda kw: _replace(kw, arg, change))


@pytest.mark.parametrize("loss,arg", MATRIX_ARGUMENTS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_matrix_arguments_must_be_finite(loss, arg, value, generator):
    def poison(t):
        t = t.detach().clone()
        flat = t.view(-1)
        flat[torch.randint(0, flat.numel(), (), generator=generator)] = value
        return t

    with pytest.raises(ValueError, match=names(_shown(arg)) + r".*non-finite"):
        _run(loss, generator, lambda kw: _replace(kw, arg, poison))


# The arguments whose shape must agree with the first one's: (loss, argument, new shape of it).
SHAPE_MISMATCHES = [
    ("MarginLoss-ref", "ref_emb", lambda b: (b + 2, D + 1)),
    ("InfoNCELoss-fused", "key", lambda b: (b + 1, D)),
    ("InfoNCELoss-reference", "key", lambda b: (b + 1, D)),
    ("InfoNCELoss-fused", "key", lambda b: (b, D + 1)),
    ("InfoNCELoss-reference", "key", lambda b: (b, D + 1)),
    ("DaNCELoss-reference", "queue", lambda b: (11, D - 1)),
    ("DaNCELoss-fused", "queue", lambda b: (11, D - 1)),
    ("AdversarialSeparation", "heads.shared", lambda b: (b, D + 1)),
    ("AdversarialSeparation", "heads.discriminative", lambda b: (b + 1, D)),
    ("AdversarialSeparation", "heads.discriminative", lambda b: (1, D)),  # would broadcast
]


@pytest.mark.parametrize("loss,arg,shape", SHAPE_MISMATCHES)
def test_matrix_shapes_must_agree(loss, arg, shape, generator):
    b = 7
    with pytest.raises(ValueError, match=names(_shown(arg))):
        _run(loss, generator, lambda kw: _replace(kw, arg, lambda t: _unit(generator, *shape(b))), b=b)


def test_query_and_key_must_share_a_dtype(generator):
    for ops in ("fused", "reference"):
        kw = nce_inputs(generator, 7)
        kw["key"] = kw["key"].float()
        with pytest.raises(ValueError, match=names("key")):
            InfoNCELoss(ops=ops)(**kw)


# ---- labels (MarginLoss) ----------------------------------------------------------------------

BAD_LABELS = {
    "short": lambda t: t[:-1],
    "long": lambda t: torch.cat([t, t[:1]]),
    "float": lambda t: t.double(),
    "bool": lambda t: t > 0,
    "2-D": lambda t: t[:, None],
    "list": lambda t: t.tolist(),
}


@pytest.mark.parametrize("loss,arg", [("MarginLoss", "labels"), ("MarginLoss-ref", "labels"),
                                      ("MarginLoss-shared-beta", "labels"), ("MarginLoss-ref", "ref_labels")])
@pytest.mark.parametrize("bad", list(BAD_LABELS))
def test_labels_must_be_integer_vectors_of_matching_length(loss, arg, bad, generator):
    with pytest.raises(ValueError, match=names(arg)):
        _run(loss, generator, lambda kw: _replace(kw, arg, BAD_LABELS[bad]))


def test_class_specific_beta_needs_labels(generator):
    with pytest.raises(ValueError, match=names("labels")):
        _run("MarginLoss", generator, lambda kw: {**kw, "labels": None})
    # Without class-specific beta the labels are not used (as in pytorch-metric-learning).
    assert torch.isfinite(_run("MarginLoss-shared-beta", generator, lambda kw: {**kw, "labels": None}))


def test_ref_labels_without_ref_emb_are_refused(generator):
    with pytest.raises(ValueError, match=names("ref_emb")):
        _run("MarginLoss", generator, lambda kw: {**kw, "ref_labels": kw["labels"]})


# ---- triplet indices (MarginLoss) -------------------------------------------------------------

@pytest.mark.parametrize("loss", ["MarginLoss", "MarginLoss-ref", "MarginLoss-shared-beta"])
@pytest.mark.parametrize("which", ["a", "p", "n"])
@pytest.mark.parametrize("side", ["negative", "too large"])
def test_triplet_indices_must_lie_in_range(loss, which, side, generator):
    def change(kw):
        rows = kw["embeddings"].shape[0] if which == "a" or "ref_emb" not in kw else kw["ref_emb"].shape[0]
        triplets = [t.clone() for t in kw["indices_tuple"]]
        t = triplets["apn".index(which)]
        t[torch.randint(0, t.numel(), (), generator=generator)] = -1 if side == "negative" else rows
        return {**kw, "indices_tuple": tuple(triplets)}

    with pytest.raises(ValueError, match=rf"indices_tuple's {which}(?!\w)"):
        _run(loss, generator, change)


# ---- hyperparameters --------------------------------------------------------------------------

HYPERPARAMETERS = [
    ("InfoNCELoss", "temperature", lambda v: InfoNCELoss(v), BAD_POSITIVE_REALS),
    ("DaNCELoss", "temperature", lambda v: DaNCELoss(v), BAD_POSITIVE_REALS),
    ("MarginLoss", "num_classes", lambda v: MarginLoss(v), BAD_COUNTS),
    ("MarginLoss", "margin", lambda v: MarginLoss(3, margin=v), BAD_NONNEGATIVE_REALS),
    ("MarginLoss", "beta_init", lambda v: MarginLoss(3, beta_init=v), BAD_NONNEGATIVE_REALS),
    ("MarginLoss", "nu", lambda v: MarginLoss(3, nu=v), BAD_NONNEGATIVE_REALS),
    ("AdversarialSeparation", "dim", lambda v: AdversarialSeparation(dim=v, hidden=4), BAD_COUNTS),
    ("AdversarialSeparation", "hidden", lambda v: AdversarialSeparation(dim=D, hidden=v), BAD_COUNTS),
    ("AdversarialSeparation", "weights", lambda v: AdversarialSeparation(weights=v, dim=D, hidden=4),
     BAD_NONNEGATIVE_REALS),
    ("AdversarialSeparation", "weights", lambda v: AdversarialSeparation(weights=[1.0, v, 2.0], dim=D, hidden=4),
     BAD_NONNEGATIVE_REALS),
]


@pytest.mark.parametrize("make,arg,value,error", [
    pytest.param(make, arg, value, error, id=f"{owner}-{arg}-{value!r}")
    for owner, arg, make, cases in HYPERPARAMETERS for value, error in cases
])
def test_hyperparameters_are_checked_at_construction(make, arg, value, error):
    with pytest.raises(error, match=names(arg)):
        make(value)


@pytest.mark.parametrize("lower,upper,error,arg", BAD_CUTOFFS)
def test_dance_cutoffs_are_checked_as_a_pair(lower, upper, error, arg):
    with pytest.raises(error, match=names(arg)):
        DaNCELoss(lower_cutoff=lower, upper_cutoff=upper)


@pytest.mark.parametrize("lower,upper", GOOD_CUTOFFS)
def test_dance_accepts_valid_cutoffs(lower, upper):
    loss = DaNCELoss(lower_cutoff=lower, upper_cutoff=upper)
    assert (loss.lower_cutoff, loss.upper_cutoff) == (lower, upper)
    assert isinstance(loss.lower_cutoff, float) and isinstance(loss.upper_cutoff, float)


# ---- the empty batch --------------------------------------------------------------------------

def _leaves(kw):
    for value in kw.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        elif isinstance(value, torch.Tensor) and value.requires_grad:
            yield value


EMPTY_CASES = [(name, "mean") for name in LOSSES] + [
    (name, "sum") for name in LOSSES if "NCE" in name]


@pytest.mark.parametrize("loss_name,reduction", EMPTY_CASES)
@pytest.mark.parametrize("queue_grad", [False, True], ids=["queue-no-grad", "queue-grad"])
def test_an_empty_batch_is_a_zero_that_backpropagates_zeros(loss_name, reduction, queue_grad, generator):
    make, inputs, _ = LOSSES[loss_name]
    if queue_grad and "NCE" not in loss_name:
        pytest.skip("no queue")
    loss_fn = make()
    if reduction != "mean":
        loss_fn.reduction = reduction
    kw = inputs(generator, 0)
    if queue_grad:
        kw["queue"].requires_grad_()
    loss = loss_fn(**kw)
    assert loss.shape == () and loss.dtype == torch.float64
    assert loss.item() == 0.0  # exactly: no term at all, not NaN
    loss.backward()
    leaves = list(_leaves(kw)) + [p for p in loss_fn.parameters()]
    for leaf in leaves:
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf))


@pytest.mark.parametrize("loss_name", [name for name in LOSSES if name.startswith("MarginLoss")])
def test_no_triplets_is_the_same_zero(loss_name, generator):
    loss_fn, inputs, _ = LOSSES[loss_name]
    kw = inputs(generator, 7)
    empty = torch.empty(0, dtype=torch.int64)
    kw["indices_tuple"] = (empty, empty, empty)
    loss_fn = loss_fn()
    loss = loss_fn(**kw)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    for leaf in list(_leaves(kw)) + list(loss_fn.parameters()):
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf))


@pytest.mark.parametrize("loss_name", [name for name in LOSSES if "NCE" in name])
def test_an_empty_batch_gives_an_empty_vector_without_reduction(loss_name, generator):
    make, inputs, _ = LOSSES[loss_name]
    loss_fn = make()
    loss_fn.reduction = "none"
    loss = loss_fn(**inputs(generator, 0))
    assert loss.shape == (0,) and loss.dtype == torch.float64
