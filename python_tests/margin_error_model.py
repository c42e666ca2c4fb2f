"""The rounding-error model of MarginLoss (docs/design.md §2.4) in float32, for tolerances.first_order_error_bound.

``margin_loss`` and ``margin_loss_grads`` evaluate the loss and its autograd gradients in float64 and
mark every quantity float32 rounds: the differences x_a - x_b, their squares, the D-term sums
(accumulation), + 1e-8 and the square root, the hinge arguments (d - beta, + margin; margin and 1e-8
are themselves rounded to float32), the sums over triplets, the division by the active count; in the
backward, 1 / active, the square root's g / (2 d), the square's 2 (x_a - x_b) g, and the per-row
accumulation of every triplet's contribution (index_put with accumulate, any order).

Kinks: a hinge whose argument lies within rounding of 0 may fall either side in float32, turning a
term and its gradient on or off and changing the active count. The model does not cover that;
``clear_of_kinks`` drops such triplets before a comparison (``NEAR`` is far above the rounding error
of d, ~D u |x|^2, at the sizes used here).
"""

import torch

from tolerances import Perturbations, accumulation

NEAR = 1e-4


def _constant(p, c):
    """A Python float as the float32 operand it becomes."""
    return p.rounded(torch.tensor(float(c), dtype=torch.float64))


def _distances(p, x, ref, a, b):
    diff = p.rounded(x[a] - ref[b])
    sq = p.rounded(diff.square())
    s = p(sq.sum(1), accumulation(x.shape[1]) * sq.detach().sum(1))
    eps = _constant(p, 1e-8)
    return diff, p.rounded(p.rounded(s + eps).sqrt())


def _hinges(p, x, ref, beta, triplets, margin):
    a, pi, ni = triplets
    m = _constant(p, margin)
    diff_ap, d_ap = _distances(p, x, ref, a, pi)
    diff_an, d_an = _distances(p, x, ref, a, ni)
    pos = p.rounded(p.rounded(d_ap - beta) + m)
    neg = p.rounded(p.rounded(beta - d_an) + m)
    return pos, neg, (diff_ap, d_ap), (diff_an, d_an)


def _beta(beta, labels, a, class_specific):
    return beta[labels[a]] if class_specific else beta[0].expand(a.numel())


def hinge_arguments(x, ref, beta, labels, triplets, margin, class_specific):
    """The float64 hinge arguments (d_ap - beta + margin, beta - d_an + margin) of each triplet."""
    b = _beta(beta.double(), labels, triplets[0], class_specific)
    pos, neg, _, _ = _hinges(Perturbations(), x.double(), ref.double(), b, triplets, margin)
    return pos.detach(), neg.detach()


def clear_of_kinks(x, ref, beta, labels, triplets, margin, class_specific):
    """The triplets both of whose hinge arguments are farther than NEAR from 0."""
    pos, neg = hinge_arguments(x, ref, beta, labels, triplets, margin, class_specific)
    keep = (pos.abs() > NEAR) & (neg.abs() > NEAR)
    return tuple(t[keep] for t in triplets)


def _sum(p, v):
    return p(v.sum(), accumulation(max(v.numel(), 1)) * v.detach().abs().sum())


def margin_loss(p: Perturbations, x, ref, beta, *, labels, triplets, margin, nu, class_specific):
    """MarginLoss's value with its float32 rounding points."""
    b = _beta(beta, labels, triplets[0], class_specific)
    pos, neg, _, _ = _hinges(p, x, ref, b, triplets, margin)
    pos, neg = pos.clamp_min(0), neg.clamp_min(0)
    active = max(int((pos > 0).sum() + (neg > 0).sum()), 1)
    loss = p.rounded(p.rounded(_sum(p, pos) + _sum(p, neg)) / active)
    if nu:
        loss = p.rounded(loss + p.rounded(_constant(p, nu) * _sum(p, b)))
    return loss


def margin_loss_grads(p: Perturbations, x, ref, beta, *, labels, triplets, margin, nu, class_specific, wrt_ref):
    """(grad x, grad beta) of MarginLoss as float32 autograd forms them, with their rounding points.
    With ``wrt_ref`` the reference set is x itself, and p, n's contributions go to x too."""
    a, pi, ni = triplets
    b = _beta(beta, labels, a, class_specific)
    pos, neg, (diff_ap, d_ap), (diff_an, d_an) = _hinges(p, x, ref, b, triplets, margin)
    on_p, on_n = (pos.detach() > 0).double(), (neg.detach() > 0).double()
    active = max(int(on_p.sum() + on_n.sum()), 1)
    g = p.rounded(torch.tensor(1.0 / active, dtype=torch.float64))
    # d/d diff of sqrt(sum diff^2 + eps): (g / (2 d)) * 2 diff, each product rounded.
    c_ap = p.rounded(p.rounded(g * on_p / (2 * d_ap))[:, None] * p.rounded(2 * diff_ap))
    c_an = p.rounded(p.rounded(-g * on_n / (2 * d_an))[:, None] * p.rounded(2 * diff_an))
    contribs = [(a, c_ap), (a, c_an)] + ([(pi, -c_ap), (ni, -c_an)] if wrt_ref else [])
    gx = torch.zeros_like(x)
    gabs = torch.zeros_like(x)
    for rows, c in contribs:
        gx = gx.index_add(0, rows, c)
        gabs = gabs.index_add(0, rows, c.detach().abs())
    gx = p(gx, accumulation(len(contribs) * a.numel() + 1) * gabs)
    # Per triplet -g [pos > 0] + g [neg > 0] + nu, then accumulated per beta slot.
    nu_ = _constant(p, nu) if nu else torch.tensor(0.0, dtype=torch.float64)
    terms = g * (on_n - on_p) + nu_
    slots = labels[a] if class_specific else torch.zeros_like(a)
    gb = torch.zeros_like(beta).index_add(0, slots, terms)
    gb_abs = torch.zeros_like(beta).index_add(0, slots, (g * (on_n + on_p) + nu_).detach())
    gb = p(gb, accumulation(3 * a.numel() + 1) * gb_abs)
    return torch.cat([gx.reshape(-1), gb])
