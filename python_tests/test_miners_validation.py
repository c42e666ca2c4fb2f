"""Every miner rejects bad settings and bad inputs with an error naming the argument, and mines
an empty batch (or an empty reference set) into empty int64 triplets."""

import math

import pytest
import torch
import torch.nn.functional as F

from diva_ext import miners
from diva_ext.losses import MarginLoss
from validation_cases import BAD_COUNTS, BAD_CUTOFFS, GOOD_CUTOFFS, names

D = 5

MINERS = {
    "DistanceWeighted-fused": lambda **kw: miners.DistanceWeightedMiner(ops="fused", **kw),
    "DistanceWeighted-reference": lambda **kw: miners.DistanceWeightedMiner(ops="reference", **kw),
    "DistanceWeighted-all": lambda **kw: miners.DistanceWeightedMiner(positives="all", **kw),
    "Shared-fused": lambda **kw: miners.SharedMiner(ops="fused", **kw),
    "Shared-reference": lambda **kw: miners.SharedMiner(ops="reference", **kw),
    "IntraClass": lambda **kw: miners.IntraClassMiner(**kw),
}
DISTANCE_MINERS = [name for name in MINERS if not name.startswith("IntraClass")]
CUTOFF_MINERS = {"DistanceWeightedMiner": miners.DistanceWeightedMiner, "SharedMiner": miners.SharedMiner}


def _inputs(generator, b=9, ref_rows=None):
    kw = {"embeddings": F.normalize(torch.randn(b, D, generator=generator, dtype=torch.float64), dim=1),
          "labels": torch.arange(b) % 3}
    if ref_rows is not None:
        kw["ref_emb"] = F.normalize(torch.randn(ref_rows, D, generator=generator, dtype=torch.float64), dim=1)
        kw["ref_labels"] = torch.arange(ref_rows) % 4
    return kw


def _mine(name, generator, change=None, ref_rows=None, b=9):
    kw = _inputs(generator, b, ref_rows)
    if change is not None:
        kw = change(kw)
    return MINERS[name](generator=generator)(**kw)


INPUT_CASES = [(name, arg, ref) for name in MINERS for arg, ref in
               (("embeddings", None), ("embeddings", 6), ("ref_emb", 6))]


# ---- inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("ref_rows", [None, 6])
def test_valid_inputs_pass_the_checks(name, ref_rows, generator):
    # The control for the tests below: only the one changed argument makes a call fail.
    a, p, n = _mine(name, generator, ref_rows=ref_rows)
    assert a.numel() > 0 and a.shape == p.shape == n.shape

@pytest.mark.parametrize("name,arg,ref_rows", INPUT_CASES)
@pytest.mark.parametrize("bad", ["integer", "bool"])
def test_embeddings_must_be_floating(name, arg, ref_rows, bad, generator):
    change = {"integer": lambda t: (t * 10).long(), "bool": lambda t: t > 0}[bad]
    with pytest.raises(ValueError, match=names(arg)):
        _mine(name, generator, lambda kw: {**kw, arg: change(kw[arg])}, ref_rows)


@pytest.mark.parametrize("name,arg,ref_rows", [case for case in INPUT_CASES if case[0] in DISTANCE_MINERS])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_embeddings_must_be_finite(name, arg, ref_rows, value, generator):
    def poison(t):
        t = t.clone()
        t.view(-1)[torch.randint(0, t.numel(), (), generator=generator)] = value
        return t

    with pytest.raises(ValueError, match=names(arg) + r".*non-finite"):
        _mine(name, generator, lambda kw: {**kw, arg: poison(kw[arg])}, ref_rows)


def test_the_intra_class_miner_does_not_read_the_values(generator):
    # It draws from the labels only, so non-finite embeddings are not its concern.
    kw = _inputs(generator)
    kw["embeddings"] = torch.full_like(kw["embeddings"], math.nan)
    a, p, n = miners.IntraClassMiner(generator=generator)(**kw)
    assert a.numel() == kw["labels"].numel()


BAD_LABELS = {
    "short": lambda t: t[:-1],
    "long": lambda t: torch.cat([t, t[:1]]),
    "float": lambda t: t.double(),
    "bool": lambda t: t > 0,
    "2-D": lambda t: t[:, None],
}


@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("bad", list(BAD_LABELS))
def test_ref_labels_must_be_integer_vectors_of_matching_length(name, bad, generator):
    with pytest.raises(ValueError, match=names("ref_labels")):
        _mine(name, generator, lambda kw: {**kw, "ref_labels": BAD_LABELS[bad](kw["ref_labels"])}, ref_rows=6)


# ---- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("miner", list(CUTOFF_MINERS))
@pytest.mark.parametrize("lower,upper,error,arg", BAD_CUTOFFS)
def test_cutoffs_are_checked_as_a_pair(miner, lower, upper, error, arg):
    with pytest.raises(error, match=names(arg)):
        CUTOFF_MINERS[miner](lower_cutoff=lower, upper_cutoff=upper)


@pytest.mark.parametrize("miner", list(CUTOFF_MINERS))
@pytest.mark.parametrize("lower,upper", GOOD_CUTOFFS)
def test_valid_cutoffs_are_accepted(miner, lower, upper, generator):
    m = CUTOFF_MINERS[miner](lower_cutoff=lower, upper_cutoff=upper, generator=generator)
    inner = m.miner if miner == "SharedMiner" else m
    assert (inner.lower_cutoff, inner.upper_cutoff) == (lower, upper)
    a, p, n = m(**_inputs(generator))
    assert a.numel() > 0


@pytest.mark.parametrize("miner", list(CUTOFF_MINERS))
@pytest.mark.parametrize("value,error", BAD_COUNTS)
def test_dim_must_be_a_positive_integer(miner, value, error):
    with pytest.raises(error, match=names("dim")):
        CUTOFF_MINERS[miner](dim=value)


@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("generator_arg", [0, "seed", torch.tensor(3)])
def test_generator_must_be_a_torch_generator(name, generator_arg):
    with pytest.raises(TypeError, match=names("generator")):
        MINERS[name](generator=generator_arg)


# ---- the empty batch --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("b,ref_rows", [(0, None), (0, 6), (9, 0), (0, 0)])
def test_an_empty_batch_mines_empty_triplets(name, b, ref_rows, generator):
    kw = _inputs(generator, b, ref_rows)
    triplets = MINERS[name](generator=generator)(**kw)
    assert len(triplets) == 3
    for t in triplets:
        assert t.dtype == torch.int64 and t.shape == (0,) and t.device == kw["embeddings"].device
    # ... which every loss turns into the zero that keeps the graph.
    embeddings = kw["embeddings"].requires_grad_()
    loss_kw = {k: v for k, v in kw.items() if k != "embeddings"}
    loss = MarginLoss(4)(embeddings, indices_tuple=triplets, **loss_kw)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))
