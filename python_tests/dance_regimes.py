"""Inputs whose DaNCE rows have a tiny normaliser (log Z far below 0), for the CPU and the
emulated CUDA tests of info_nce.

- "max_beyond_cutoff": at D = 32 near-opposite negatives (d close to 2, beyond the cutoff)
  weigh ~e^80 while the kept ones sit e^-10 .. e^-100 below them: the row maximum is not among
  the weights that matter.
- "all_at_floor": every negative lies beyond the cutoff, so every weight sits at the 1e-45
  floor (Z = K e^-103.6) and they are uniform after normalisation.
"""

import math

import torch
import torch.nn.functional as F

REGIMES = ["max_beyond_cutoff", "all_at_floor"]
UPPER_CUTOFF = 1.4


def _near(center, n, noise, generator):
    return F.normalize(center + noise * torch.randn(n, center.shape[-1], generator=generator, dtype=torch.float64), dim=1)


def tiny_normaliser_inputs(regime, generator, rows=5, far=3, kept=4):
    """(q, pos, queue) in float64, the queue `far` near-opposite rows (plus `kept` nearby rows
    for "max_beyond_cutoff"); asserts that the regime holds. Positives are weak, so the
    negatives make up most of the loss."""
    d = 32 if regime == "max_beyond_cutoff" else 3
    u = F.normalize(torch.randn(1, d, generator=generator, dtype=torch.float64), dim=1)
    q = _near(u, rows, 0.05, generator)
    queue = _near(-u, far, 0.05, generator)
    if regime == "max_beyond_cutoff":
        queue = torch.cat([queue, _near(u, kept, 0.5, generator)])
    pos = _near(-u, rows, 0.3, generator)
    s = q @ queue.t()
    dist = (2 - 2 * s).clamp_min(0).sqrt().clamp_min(0.5)
    log_w = (2.0 - d) * dist.log() - ((d - 3.0) / 2.0) * (1 - dist**2 / 4).clamp_min(1e-8).log()
    beyond = dist > UPPER_CUTOFF
    assert beyond.gather(1, log_w.argmax(1, keepdim=True)).all()
    if regime == "all_at_floor":
        assert beyond.all()
    else:
        kept_gap = log_w.max(1).values - log_w.masked_fill(beyond, -math.inf).max(1).values
        assert ((kept_gap > 10) & (kept_gap < 100)).all(), kept_gap
    return q, pos, queue
