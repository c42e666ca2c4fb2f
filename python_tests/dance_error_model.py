"""The rounding-error model of a float32 DaNCE loss (docs/design.md §2.3), for tolerances.first_order_error_bound.

``dance_mean_loss`` and ``dance_mean_loss_grad_q`` evaluate the contract's formula in float64 and
mark every quantity a float32 implementation rounds: the inner products (accumulation error of D
terms), each elementary step of the log-weight (logs at 1 ulp), the exponentials, the weight and
softmax sums (accumulation of K + 1 terms; twice that for an online max that rescales the running
sum), the logits and the loss.

``two_pass``: a kernel that forms the row normaliser of the weights (max log w, Z) in one pass and the
weights in another evaluates log w twice from the same inner products, and the two evaluations may
round differently (diva_ext's CPU kernel: its vectorised and scalar loops differ by an ulp of log w);
its backward recomputes the inner products, the weights and the logits against the forward's lse.
Evaluated once, the rounding of log w cancels in w / sum(w); evaluated twice it does not, and where
the top weight saturates at 1 an ulp of log w (~73 at D = 128, d = 0.56: 7.6e-6) is a relative error
of the weight itself, so of the logit w s / T (~84 with T = 0.01): ~6e-4.

Kinks and jumps: the lower-cutoff clamp is applied only where d is clearly below the cutoff (so the
bound takes the larger one-sided slope near it); a negative whose inner product is within rounding of
the upper cutoff may drop out or come in, which the model counts as an error of its whole weight.
"""

import torch

from tolerances import Perturbations, accumulation

# Relative half-width of the band around a cutoff where float32 rounding may fall either side:
# far above the accumulation error of an inner product of the sizes used here (D <= 512).
_NEAR = 1e-4


def _log_weights(p: Perturbations, s, n, lower_cutoff):
    sd = p.rounded(2.0 - 2.0 * s).clamp_min(0.0)
    clamped = sd.detach().sqrt() < lower_cutoff * (1 - _NEAR)
    # The clamped entries take sqrt of 1, not of their d^2: sqrt's infinite slope at d = 0 (a
    # negative equal to the query, common at D = 1) times where()'s zero would make the bound NaN.
    d = p.rounded(torch.where(clamped, torch.ones_like(sd), sd).sqrt())
    d = torch.where(clamped, torch.full_like(d, lower_cutoff), d)
    log_d = p.rounded(d.log(), 2)
    inner = p.rounded(1.0 - p.rounded(0.25 * p.rounded(d.square())))
    second = p.rounded(((n - 3.0) / 2.0) * p.rounded(inner.clamp_min(1e-8).log(), 2))
    return d, p.rounded(p.rounded((2.0 - n) * log_d) - second)


def _normalised_weights(p, q, queue, lower_cutoff, upper_cutoff, two_pass):
    s = p.dot(q, queue)
    d, log_w = _log_weights(p, s, q.shape[1], lower_cutoff)
    log_w_norm = _log_weights(p, s, q.shape[1], lower_cutoff)[1] if two_pass else log_w
    keep = (d.detach() <= upper_cutoff).double()
    near = ((d.detach() - upper_cutoff).abs() <= _NEAR * upper_cutoff).double()
    m = log_w_norm.detach().max(dim=1, keepdim=True).values
    # The floor counts in the normaliser too: a row with every negative beyond the cutoff has
    # uniform weights 1/K (docs/design.md §2.3), not 0/0.
    terms = (p.rounded((log_w_norm - m).exp(), 2) * keep).clamp_min(1e-45)
    k = terms.shape[1]
    z = p(terms.sum(1, keepdim=True), accumulation(k) * terms.detach().sum(1, keepdim=True))
    w = p.rounded((log_w - m).exp(), 2) * keep
    w = p(w, w.detach() * near)  # may come in or drop out: its whole weight
    return s, p.rounded(w.clamp_min(1e-45) / z)


def _logits(p, q, k, queue, temperature, lower_cutoff, upper_cutoff, two_pass):
    n = q.shape[1]
    pos = p((q * k).sum(1, keepdim=True), accumulation(n) * (q.abs() * k.abs()).sum(1, keepdim=True))
    s, w = _normalised_weights(p, q, queue, lower_cutoff, upper_cutoff, two_pass)
    return p.rounded(torch.cat([pos, p.rounded(w * s)], 1) / temperature), w


def _lse(p, logits):
    m = logits.detach().max(dim=1, keepdim=True).values
    e = p.rounded(p.rounded(logits - m).exp(), 2)
    total = p(e.sum(1, keepdim=True), accumulation(2 * e.shape[1]) * e.detach().sum(1, keepdim=True))
    return p.rounded(m + p.rounded(total.log(), 2))


def dance_mean_loss(p: Perturbations, q, k, queue, *, temperature, lower_cutoff=0.5, upper_cutoff=1.4,
                    two_pass=False):
    """The batch mean of DaNCE's per-row loss lse_i - a_i, with its float32 rounding points."""
    logits, _ = _logits(p, q, k, queue, temperature, lower_cutoff, upper_cutoff, two_pass)
    loss = p.rounded(_lse(p, logits)[:, 0] - logits[:, 0])
    return p(loss.sum(), accumulation(loss.shape[0]) * loss.detach().abs().sum()) / q.shape[0]


def dance_mean_loss_grad_q(p: Perturbations, q, k, queue, *, temperature, lower_cutoff=0.5, upper_cutoff=1.4,
                           two_pass=False):
    """d(batch mean loss) / dq [B, D] written out (weights constant, docs/design.md §2.3):
    (1/(B T)) ((p_0 - 1) k_i + sum_j p_j w_j queue_j), with its float32 rounding points. A two-pass
    kernel's backward recomputes the logits against the forward's saved lse."""
    logits, w = _logits(p, q, k, queue, temperature, lower_cutoff, upper_cutoff, two_pass)
    lse = _lse(p, logits)
    if two_pass:
        logits, w = _logits(p, q, k, queue, temperature, lower_cutoff, upper_cutoff, two_pass)
    prob = p.rounded(p.rounded(logits - lse).exp(), 2)
    coef = torch.cat([p.rounded(prob[:, :1] - 1.0), p.rounded(prob[:, 1:] * w)], 1)
    coef = p.rounded(coef / (temperature * q.shape[0]))
    b = q.shape[0]
    values = torch.cat([k[:, None, :], queue[None].expand(b, -1, -1)], 1)  # [B, K + 1, D]
    grad = (coef[:, :, None] * values).sum(1)
    return p(grad, accumulation(coef.shape[1] + 1) * (coef.detach().abs()[:, :, None] * values.abs()).sum(1))
