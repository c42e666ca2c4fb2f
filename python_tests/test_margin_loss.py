"""diva_ext.losses.MarginLoss against a hand-written float64 loop; tuples from PML's miner."""

import functools

import pytest
import torch

from diva_ext import miners
from diva_ext.losses import MarginLoss
from margin_error_model import clear_of_kinks, margin_loss, margin_loss_grads
from tolerances import SECOND_ORDER, assert_within, first_order_error_bound


def loop_reference(x, labels, triplets, beta, margin, nu, class_specific, ref=None):
    """The loss of docs/design.md §2.4 written term by term in float64."""
    ref = x if ref is None else ref
    total, active, beta_sum = 0.0, 0, 0.0
    for a, p, n in zip(*(t.tolist() for t in triplets)):
        b = beta[labels[a]] if class_specific else beta[0]
        d_ap = torch.sqrt(((x[a] - ref[p]) ** 2).sum() + 1e-8)
        d_an = torch.sqrt(((x[a] - ref[n]) ** 2).sum() + 1e-8)
        pos, neg = torch.relu(d_ap - b + margin), torch.relu(b - d_an + margin)
        total = total + pos + neg
        active += int(pos > 0) + int(neg > 0)
        beta_sum = beta_sum + b
    loss = total / max(active, 1)
    return loss + nu * beta_sum if nu else loss


def random_triplets(b, count, generator):
    return tuple(torch.randint(0, b, (count,), generator=generator) for _ in range(3))


def error_bound(f, inputs, **kw):
    """Bound on |float32 MarginLoss - float64 loop|: the float32 rounding model plus the float64
    oracle's own (same model at float64 u), times SECOND_ORDER for the linearisation."""
    f = functools.partial(f, **kw)
    return SECOND_ORDER * (first_order_error_bound(f, inputs) + first_order_error_bound(f, inputs, torch.float64))


def triplets_clear_of_kinks(x, ref, beta, labels, count, generator, margin, class_specific):
    """``count`` random triplets whose hinges are not within rounding of 0 (margin_error_model)."""
    drawn = clear_of_kinks(x, ref, beta, labels, random_triplets(ref.shape[0], 2 * count + 8, generator), margin,
                           class_specific)
    assert drawn[0].numel() >= count
    return tuple(t[:count] for t in drawn)


@pytest.mark.parametrize("class_specific", [True, False])
@pytest.mark.parametrize("nu", [0.0, 0.01])
@pytest.mark.parametrize("count", [1, 7, 64])
def test_matches_float64_loop(class_specific, nu, count, generator):
    x = torch.nn.functional.normalize(torch.randn(23, 16, generator=generator), dim=1).requires_grad_()
    labels = torch.randint(0, 5, (23,), generator=generator)
    loss_fn = MarginLoss(5, margin=0.2, beta_init=1.2, class_specific_beta=class_specific, nu=nu)
    with torch.no_grad():
        loss_fn.beta.add_(0.2 * torch.randn(loss_fn.beta.shape, generator=generator))
    beta = loss_fn.beta.detach()
    triplets = triplets_clear_of_kinks(x.detach(), x.detach(), beta, labels, count, generator, 0.2, class_specific)
    got = loss_fn(x, labels, triplets)
    gx, gb = torch.autograd.grad(got, (x, loss_fn.beta))

    x64 = x.detach().double().requires_grad_()
    beta64 = loss_fn.beta.detach().double().requires_grad_()
    want = loop_reference(x64, labels, triplets, beta64, 0.2, nu, class_specific)
    rx, rb = torch.autograd.grad(want, (x64, beta64))
    kw = dict(labels=labels, triplets=triplets, margin=0.2, nu=nu, class_specific=class_specific)
    inputs = (x.detach(), x.detach(), beta)
    assert_within(got.double(), want.detach(), error_bound(margin_loss, inputs, **kw), "loss")
    grad_bound = error_bound(margin_loss_grads, inputs, wrt_ref=True, **kw)
    assert_within(torch.cat([gx.reshape(-1), gb]).double(), torch.cat([rx.reshape(-1), rb]), grad_bound, "grads")


def test_reference_set(generator):
    x = torch.randn(9, 6, generator=generator, requires_grad=True)
    ref = torch.randn(14, 6, generator=generator)
    labels = torch.randint(0, 3, (9,), generator=generator)
    triplets = (torch.randint(0, 9, (40,), generator=generator), torch.randint(0, 14, (40,), generator=generator),
                torch.randint(0, 14, (40,), generator=generator))
    loss_fn = MarginLoss(3)
    beta = loss_fn.beta.detach()
    triplets = tuple(t[:20] for t in clear_of_kinks(x.detach(), ref, beta, labels, triplets, 0.2, True))
    assert triplets[0].numel() == 20
    got = loss_fn(x, labels, triplets, ref_emb=ref, ref_labels=torch.zeros(14, dtype=torch.int64))
    want = loop_reference(x.double(), labels, triplets, loss_fn.beta.double(), 0.2, 0.0, True, ref=ref.double())
    bound = error_bound(margin_loss, (x.detach(), ref, beta), labels=labels, triplets=triplets, margin=0.2, nu=0.0,
                        class_specific=True)
    assert_within(got.double(), want.detach(), bound, "loss")


def test_no_triplets_and_no_active_terms_give_zero_with_a_graph(generator):
    x = torch.randn(4, 3, generator=generator, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss_fn = MarginLoss(2, margin=0.1, beta_init=1.0)
    empty = (torch.empty(0, dtype=torch.int64),) * 3
    loss = loss_fn(x, labels, empty)
    assert loss.item() == 0.0
    loss.backward()  # connected to the graph, with zero gradients
    assert not x.grad.any()
    # Far negatives and identical positives: every term is 0, the loss 0 (no division by 0).
    far = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]], requires_grad=True)
    loss = loss_fn(far, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    assert loss.item() == 0.0


def test_pml_distance_weighted_tuples_feed_our_loss(generator):
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    x = torch.nn.functional.normalize(torch.randn(40, 32, generator=generator), dim=1).requires_grad_()
    labels = torch.arange(10).repeat_interleave(4)
    torch.manual_seed(0)
    triplets = pml_miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)(x, labels)
    loss_fn = MarginLoss(10, beta_init=1.0)
    beta = loss_fn.beta.detach()
    triplets = clear_of_kinks(x.detach(), x.detach(), beta, labels, triplets, 0.2, True)
    assert triplets[0].numel() > 0
    got = loss_fn(x, labels, triplets)
    x64 = x.detach().double().requires_grad_()
    want = loop_reference(x64, labels, triplets, loss_fn.beta.double(), 0.2, 0.0, True)
    kw = dict(labels=labels, triplets=triplets, margin=0.2, nu=0.0, class_specific=True)
    inputs = (x.detach(), x.detach(), beta)
    assert_within(got.double(), want.detach(), error_bound(margin_loss, inputs, **kw), "loss")
    (gx,) = torch.autograd.grad(got, (x,))
    (rx,) = torch.autograd.grad(want, (x64,))
    grad_bound = error_bound(margin_loss_grads, inputs, wrt_ref=True, **kw)[:gx.numel()].view_as(gx)
    assert_within(gx.double(), rx, grad_bound, "grad x")


def test_our_miners_feed_our_loss(generator):
    x = torch.nn.functional.normalize(torch.randn(24, 8, generator=generator), dim=1).requires_grad_()
    labels = torch.arange(12).repeat(2)
    loss_fn = MarginLoss(12)
    for miner in (miners.DistanceWeightedMiner(generator=generator), miners.SharedMiner(generator=generator),
                  miners.IntraClassMiner(generator=generator)):
        loss = loss_fn(x, labels, miner(x, labels))
        assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize(
    "triplets,pattern",
    [
        (None, r"needs indices_tuple = \(a, p, n\)"),
        ((torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2])), r"got a 4-tuple"),
        ((torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2])), r"must have one length"),
        ((torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2])), r"a must be a 1-D integer tensor"),
    ],
)
def test_bad_triplets(triplets, pattern):
    with pytest.raises(ValueError, match=pattern):
        MarginLoss(3)(torch.randn(3, 2), torch.tensor([0, 1, 2]), triplets)


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels of anchors must lie in \[0, num_classes = 3\)"):
        MarginLoss(3)(torch.randn(3, 2), torch.tensor([0, 1, 7]), (torch.tensor([2]), torch.tensor([0]), torch.tensor([1])))
    with pytest.raises(ValueError, match=r"num_classes must be >= 1"):
        MarginLoss(0)
