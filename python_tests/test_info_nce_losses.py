"""InfoNCELoss and DaNCELoss modules, and one MoCo step with the queue and momentum encoder."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diva_ext import reference
from diva_ext.losses import DaNCELoss, InfoNCELoss
from diva_ext.moco import MemoryQueue, MomentumEncoder
from moco_step_error_model import moco_step_param_grads
from tolerances import SECOND_ORDER, assert_within, first_order_error_bound


def unit(*shape, generator):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("ops", ["fused", "reference"])
def test_losses_reduce_the_reference(ops, generator):
    q, k, queue = unit(9, 16, generator=generator), unit(9, 16, generator=generator), unit(40, 16, generator=generator)
    want_none, _ = reference.info_nce(q, k, queue, temperature=0.2)
    want_dance, _ = reference.info_nce(
        q, k, queue, temperature=0.05, weighting="dance", lower_cutoff=0.3, upper_cutoff=1.5
    )
    torch.testing.assert_close(InfoNCELoss(0.2, ops=ops)(q, k, queue), want_none.mean())
    torch.testing.assert_close(InfoNCELoss(0.2, reduction="sum", ops=ops)(q, k, queue), want_none.sum())
    dance = DaNCELoss(0.05, lower_cutoff=0.3, upper_cutoff=1.5, reduction="none", ops=ops)
    torch.testing.assert_close(dance(q, k, queue), want_dance)
    assert DaNCELoss().temperature == 0.01  # DiVA's default


def test_loss_arguments_are_validated():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        InfoNCELoss(reduction="avg")
    with pytest.raises(ValueError, match="ops must be one of"):
        DaNCELoss(ops="cuda")
    with pytest.raises(ValueError, match="lower_cutoff <= upper_cutoff"):
        DaNCELoss(lower_cutoff=1.0, upper_cutoff=0.5)


def test_one_moco_step_enqueues_after_the_loss(generator):
    """Keys from the momentum encoder, negatives from the queue, then the queue takes the keys;
    the fused loss lets the queue change before backward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
    key_encoder = MomentumEncoder(model, 0.9)
    queue = MemoryQueue.for_batches(3, 5, 6, dtype=torch.float32)
    queue.fill(F.normalize(key_encoder(torch.randn(5, 8, generator=generator)), dim=1) for _ in range(4))
    assert queue.is_full
    x = torch.randn(5, 8, generator=generator)
    query = F.normalize(model(x + 0.1), dim=1)
    keys = F.normalize(key_encoder(x), dim=1)
    negatives = queue.negatives().clone()
    loss = DaNCELoss(0.1)(query, keys, queue.negatives())
    queue.enqueue(keys)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want, _ = reference.info_nce(F.normalize(model(x + 0.1), dim=1), keys, negatives, temperature=0.1, weighting="dance")
    want.mean().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    # Each float32 path against float64 within its own first-order rounding bound (the fused
    # kernel evaluates log w in two passes); the float64 oracle's own error is ~u64/u32 = 2^-29 of it.
    model64 = copy.deepcopy(model).double()
    params64 = list(model64.parameters())
    loss64, _ = reference.info_nce(F.normalize(model64(x.double() + 0.1), dim=1), keys.detach().double(),
                                   negatives.double(), temperature=0.1, weighting="dance")
    oracle = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss64.mean(), params64)])
    inputs = [p.detach() for p in model.parameters()] + [x, keys.detach(), negatives]
    for name, got, two_pass in (("fused", grads, True), ("reference", ref_grads, False)):
        f = functools.partial(moco_step_param_grads, shift=0.1, two_pass=two_pass, temperature=0.1)
        bound = SECOND_ORDER * first_order_error_bound(f, inputs)
        assert_within(torch.cat([g.reshape(-1) for g in got]).double(), oracle, bound, f"{name} parameter gradients")
    assert torch.equal(queue.negatives()[:5], keys)  # wrapped to the start
