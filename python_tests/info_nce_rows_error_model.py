"""Per-row rounding-error model of float32 info_nce values (loss_i, lse_i), for
tolerances.first_order_error_bound. DaNCE rows reuse dance_error_model's logits (weights, two-pass
log w) and log-sum-exp (online maximum: 2 (K + 1) roundings per term of the sum); plain InfoNCE
rows have the inner products (accumulation of D terms) and the division by T as rounding points.
"""

import torch

from dance_error_model import _lse, _logits
from tolerances import Perturbations, accumulation, gamma


def _plain_logits(p: Perturbations, q, k, queue, temperature):
    pos = p((q * k).sum(1, keepdim=True), accumulation(q.shape[1]) * (q.abs() * k.abs()).sum(1, keepdim=True))
    return p.rounded(torch.cat([pos, p.dot(q, queue)], 1) / temperature)


def info_nce_rows(p: Perturbations, q, k, queue, *, temperature, weighting, lower_cutoff=0.5, upper_cutoff=1.4,
                  two_pass=True):
    """[2, B]: (loss_i, lse_i) with their float32 rounding points. ``two_pass`` (the fused CPU
    kernel's DaNCE) only adds error terms, so it also bounds a one-pass kernel."""
    if weighting == "dance":
        logits, _ = _logits(p, q, k, queue, temperature, lower_cutoff, upper_cutoff, two_pass)
    else:
        logits = _plain_logits(p, q, k, queue, temperature)
    lse = _lse(p, logits)[:, 0]
    return torch.stack([p.rounded(lse - logits[:, 0]), lse])


def float64_oracle_error(loss: torch.Tensor, lse: torch.Tensor, k: int) -> torch.Tensor:
    """[2, B]: the error of diva_ext.reference.info_nce's own float64 (loss, lse), for yardsticks
    against it: lse from K + 1 logits (each rounded once, the shift, the sum, the log: about 8
    roundings on any path, relative to magnitudes <= |lse| + |a|) and loss = lse - a, which
    cancels where the positive dominates (a loss of 1e-19 comes out 0). |a| <= |lse| + |loss|."""
    return gamma(k + 8, torch.float64) * (2 * lse.abs() + loss.abs()).expand(2, -1)
