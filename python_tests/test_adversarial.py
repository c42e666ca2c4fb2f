"""Gradient reversal and DiVA's adversarial decorrelation."""

import pytest
import torch

from diva_ext.losses.adversarial import AdversarialSeparation, reverse_gradient


def test_gradient_reversal_is_identity_forward_and_negates_backward():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = reverse_gradient(x, 2.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -2.5 * w)


def _heads(generator, b=9, d=16):
    names = ("discriminative", "selfsimilarity", "shared", "intra")
    return {n: torch.nn.functional.normalize(torch.randn(b, d, generator=generator), dim=1).requires_grad_()
            for n in names}


def test_matches_explicit_formula(generator):
    adv = AdversarialSeparation(weights=[3.0, 5.0, 7.0], dim=16, hidden=32)
    heads = _heads(generator)
    got = adv(heads)
    want = 0.0
    norm = torch.nn.functional.normalize
    for (source, target), rho in zip(adv.pairs, adv.weights):
        p = norm(adv.regressors[adv.key(source, target)](norm(heads[source], dim=-1)), dim=-1)
        want = want - rho * ((norm(heads[target], dim=-1) * p) ** 2).mean(-1).mean()
    torch.testing.assert_close(got, want)


def test_reversal_flips_the_sign_of_the_gradient_reaching_the_heads(generator):
    """The regressor descends the loss; the heads receive the negated gradient (they ascend it,
    i.e. decorrelate)."""
    adv = AdversarialSeparation(weights=10.0, dim=16, hidden=32)
    heads = _heads(generator)
    loss = adv(heads)
    grads = torch.autograd.grad(loss, list(heads.values()) + list(adv.parameters()))
    head_grads = dict(zip(heads, grads[: len(heads)]))

    # The same computation without reversal gives exactly the opposite head gradients.
    plain = {n: h.detach().clone().requires_grad_() for n, h in heads.items()}
    norm = torch.nn.functional.normalize
    loss_plain = 0.0
    for (source, target), rho in zip(adv.pairs, adv.weights):
        p = norm(adv.regressors[adv.key(source, target)](norm(plain[source], dim=-1)), dim=-1)
        loss_plain = loss_plain - rho * ((norm(plain[target], dim=-1) * p) ** 2).mean(-1).mean()
    plain_grads = torch.autograd.grad(loss_plain, list(plain.values()))
    for name, g in zip(plain, plain_grads):
        assert g.abs().max() > 0
        torch.testing.assert_close(head_grads[name], -g)
    # The regressors' own gradients are not reversed.
    assert all(g.abs().max() > 0 for g in grads[len(heads):])


def test_training_the_heads_reduces_correlation(generator):
    """A few steps of the min-max game: the regressor is frozen, heads follow the reversed
    gradient, so the squared correlation it finds goes down."""
    torch.manual_seed(0)
    adv = AdversarialSeparation(pairs=[("shared", "discriminative")], weights=1.0, dim=16, hidden=32)
    for p in adv.parameters():
        p.requires_grad_(False)
    base = torch.randn(64, 16, generator=generator)
    heads = {"shared": base.clone().requires_grad_(), "discriminative": (base + 0.1 * torch.randn(64, 16)).requires_grad_()}
    opt = torch.optim.SGD(heads.values(), lr=0.5)
    start = -adv(heads).detach().item()
    for _ in range(50):
        opt.zero_grad()
        adv(heads).backward()
        opt.step()
    assert -adv(heads).detach().item() < start


def test_bad_arguments():
    with pytest.raises(ValueError, match="one per pair"):
        AdversarialSeparation(weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="pairs"):
        AdversarialSeparation(pairs=[("shared", "shared")])
    adv = AdversarialSeparation(dim=4, hidden=8)
    with pytest.raises(KeyError, match="missing"):
        adv({"discriminative": torch.randn(2, 4)})
