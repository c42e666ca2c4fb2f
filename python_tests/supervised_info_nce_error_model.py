"""Rounding-error models of float32 (or float64) supervised_info_nce, for comparisons with a float64
oracle: per-row values through tolerances.first_order_error_bound, gradients in closed form.

The kernel (csrc math/supervised_info_nce.h): s = q m^T (D products), t = s * fl(1/T) (two
roundings), the online (max, sum) of e^(t - m) (one rounding of t - m by FMA, exp at 1 ulp; the
sum with 2 K roundings per term, since an online maximum rescales it), log at 1 ulp, lse = m +
log l; the positives' sum sigma of s (n_i terms in any order), mu = (sigma / n) * fl(1/T), and
loss = (m - mu) + log l. The model marks each of these; the kernel carries lse's rounding error
besides (the backward reads it), which only makes it more accurate than modelled.
"""

import torch

from info_nce_gradient_error_model import subnormal
from tolerances import Perturbations, accumulation, unit_roundoff


def positive_mask(labels, memory_labels):
    return (labels[:, None] == memory_labels[None, :]).double()


def supervised_info_nce_rows(p: Perturbations, q, memory, mask, *, temperature):
    """[2, B]: (loss_i, lse_i) with their rounding points; ``mask`` [B, K] the positives (float)."""
    k = memory.shape[0]
    s = p.dot(q, memory)
    t = p.rounded(s / temperature, 2)
    m = t.detach().max(1, keepdim=True).values
    e = p.rounded(p.rounded(t - m).exp(), 2)
    total = p(e.sum(1, keepdim=True), accumulation(2 * k) * e.detach().sum(1, keepdim=True))
    log_l = p.rounded(total.log(), 2)
    lse = p.rounded(m + log_l)
    n = mask.sum(1, keepdim=True)
    n_max = int(n.max().item()) if n.numel() else 0
    sigma = p((s * mask).sum(1, keepdim=True), accumulation(n_max) * (s.detach().abs() * mask).sum(1, keepdim=True))
    mean = p.rounded(p.rounded(sigma / n.clamp_min(1)) / temperature, 2)
    loss = p.rounded(p.rounded(m - mean) + log_l)
    loss = torch.where(n > 0, loss, torch.zeros_like(loss))
    return torch.stack([loss[:, 0], lse[:, 0]])


def supervised_info_nce_gradient_bounds(q, memory, mask, g, h, *, temperature, dtype=torch.float32):
    """(bound on grad q [B, D], on grad memory [K, D]) of sum(g loss + h lse) computed in ``dtype``,
    first order (multiply by tolerances.SECOND_ORDER), for both backward paths: the recomputed
    tiles G = ((g + h) p - w mask) / T with w = g / n, and the saved O = p m and mean positive
    rows combined as ((g + h) O - g mbar) / T.

    Factors as info_nce_gradient_error_model: s accumulates D products; t two roundings; lse the
    p-weighted errors of t, the 2K roundings of the online sum, the log and the add; p = exp(t -
    lse) from the errors of t and lse, the subtraction and the exp; R = (g + h) p - w mask with
    its products, w's division and the subtraction; G = R / T two more; every product may
    underflow (one subnormal step); then sums of n terms in any order add gamma_{n+2} sum |G| |x|.
    The O path forms the two parts separately, so their sizes bound its error instead of |G|'s.
    """
    q, memory, mask, g, h = (x.detach().double() for x in (q, memory, mask, g, h))
    u = unit_roundoff(dtype)
    b, k, d = q.shape[0], memory.shape[0], q.shape[1]
    t_ = float(temperature)
    s = q @ memory.t()
    sig = accumulation(d, dtype) * (q.abs() @ memory.abs().t())
    t = s / t_
    dt = sig / t_ + 2 * u * t.abs()
    if k == 0:
        return torch.zeros_like(q), torch.zeros_like(memory)
    p = torch.softmax(t, 1)
    lse = torch.logsumexp(t, 1, keepdim=True)
    m = t.max(1, keepdim=True).values
    dlse = (p * (dt + u * (t - m).abs())).sum(1, keepdim=True) + 2 * u + accumulation(2 * k, dtype) \
        + 2 * u * (lse - m) + u * lse.abs()
    dp = p * (dt + dlse + u * (t - lse).abs() + 2 * u) + subnormal(dtype)
    n = mask.sum(1, keepdim=True)
    w = torch.where(n > 0, g[:, None] / n.clamp_min(1), torch.zeros_like(n))
    a = torch.where(n > 0, (g + h)[:, None], h[:, None])  # g drops out of a row without positives
    r = a * p - w * mask
    dr = a.abs() * dp + 2 * u * r.abs() + u * w.abs() * mask
    big_g = r / t_
    dg = dr / t_ + 2 * u * big_g.abs() + subnormal(dtype)
    parts = (a.abs() * p + w.abs() * mask) / t_  # sizes of the O path's two terms
    n_max = int(n.max().item())
    bq = dg @ memory.abs() + accumulation(k + 3, dtype) * (big_g.abs() @ memory.abs()) \
        + (accumulation(max(k, n_max) + 3, dtype) + 4 * u) * (parts @ memory.abs())
    bm = dg.t() @ q.abs() + accumulation(b + 2, dtype) * (big_g.abs().t() @ q.abs())
    return bq, bm
