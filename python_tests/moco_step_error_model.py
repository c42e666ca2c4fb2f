"""The rounding-error model of one float32 MoCo step's parameter gradients, for
tolerances.first_order_error_bound: a Linear-ReLU-Linear query encoder, F.normalize, DaNCE's batch
mean loss (dance_error_model.dance_mean_loss_grad_q: weights constant, docs/design.md §2.3) and the backward
through normalize and both linears, with every product sum (tolerances.Perturbations.dot) and
elementwise step marked.

The backward steps are marked in one natural order (autograd may associate a few differently); a
different order moves the rounding points, not the size of the first-order bound beyond the
SECOND_ORDER headroom. Keys and negatives are inputs (both computations are given the same float32
values). A ReLU whose input is within rounding of 0 could switch the mask; with ~100 units of size
~0.5 and rounding ~1e-7 that has probability ~1e-5 per run at most, and is not modelled.
"""

import torch

from dance_error_model import dance_mean_loss_grad_q
from tolerances import Perturbations, accumulation


def _sum_rows(p: Perturbations, v):
    return p(v.sum(0), accumulation(v.shape[0]) * v.detach().abs().sum(0))


def moco_step_param_grads(p: Perturbations, w1, b1, w2, b2, x, k, queue, *, shift, two_pass, **dance):
    """Flattened gradients of (w1, b1, w2, b2) of the DaNCE batch mean loss of
    normalize(relu((x + shift) w1^T + b1) w2^T + b2) against keys k and negatives queue."""
    xin = p.rounded(x + shift)
    h = p.rounded(p.dot(xin, w1) + b1)
    on = (h.detach() > 0).double()
    r = h * on
    o = p.rounded(p.dot(r, w2) + b2)
    sq = p.rounded(o.square())
    norm = p.rounded(p(sq.sum(1, keepdim=True), accumulation(o.shape[1]) * sq.detach().sum(1, keepdim=True)).sqrt())
    q = p.rounded(o / norm)
    gq = dance_mean_loss_grad_q(p, q, k, queue, two_pass=two_pass, **dance)
    gq_q = p.rounded(gq * q)
    dot = p(gq_q.sum(1, keepdim=True), accumulation(q.shape[1]) * gq_q.detach().abs().sum(1, keepdim=True))
    go = p.rounded(p.rounded(gq - p.rounded(q * dot)) / norm)
    gw2 = p.dot(go.t(), r.t())
    gb2 = _sum_rows(p, go)
    gh = p.dot(go, w2.t()) * on
    gw1 = p.dot(gh.t(), xin.t())
    gb1 = _sum_rows(p, gh)
    return torch.cat([gw1.reshape(-1), gb1, gw2.reshape(-1), gb2])
