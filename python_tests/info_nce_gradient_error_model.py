"""Componentwise first-order bounds on the rounding error of info_nce's gradients (q, k, queue)
of sum_i (g_i loss_i + h_i lse_i), for comparisons with a float64 oracle.

An elementwise first_order_error_bound would take one backward per gradient element over a
[B, K + 1, D] graph; the gradients' structure gives the bound in closed form instead. With
logits l_ij = w_ij s_ij / T (w_i0 = 1 for the positive; w = 1 without weighting), softmax p and
R_ij = (g_i + h_i) p_ij - g_i [j = 0], the gradient of the inner product s_ij is G_ij = R_ij w_ij / T
(DaNCE's weights are constants by contract) and

    grad q_i = sum_j G_ij x_j (x_0 = k_i, x_j = queue_j),  grad k_i = G_i0 q_i,  grad queue_j = sum_i G_ij q_i.

Each computed factor carries the first-order error of its inputs plus its own roundings:
  s:   accumulation of D products, gamma_D sum |q x|;
  w:   (DaNCE) log w's sensitivity to s times s's error, plus every rounding of its evaluation
       (logs at 1 ulp = 2u), counted once for the numerator and once for the normaliser, since
       a two-pass kernel evaluates log w twice (dance_error_model); a weight whose distance lies
       within rounding of the upper cutoff may drop out: its whole weight;
  l:   w s / T, two roundings; lse: the p-weighted logit errors, the K + 1 exponentials (1 ulp)
       and their sum (2 (K + 1) roundings, an online maximum rescales it), the log and the add;
  p:   exp(l - lse) from the errors of l and lse, the subtraction and the exponential;
  G:   R's error (a product and for j = 0 a subtraction) and w's, two more roundings;
  and every weight, probability and product may underflow: one subnormal spacing of its dtype;
then the final sums add gamma_{n + 2} sum |G| |x| for n terms in any order (a saved O = P V and
the recomputed tiles are such sums). The kernels are more accurate than this (lse carries its
rounding error, one FMA per logit offset): a bound only needs to be no smaller. The float64
oracle's own error is 2^-29 of this and, with the neglected second-order terms, inside
tolerances.SECOND_ORDER, which the callers apply.
"""

import torch

from tolerances import accumulation, unit_roundoff

# Relative half-width of the band around the upper cutoff where a weight may drop out or come
# in (as in dance_error_model: far above the inner products' rounding for D <= 512).
_NEAR = 1e-4


def subnormal(dtype):
    """The spacing of dtype's subnormal numbers: the absolute error of any result that underflows."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def _dance_weights_and_errors(s, sigma, n, lower_cutoff, upper_cutoff, u, underflow):
    """DaNCE's normalised weights w [B, K] (float64, as reference.dance_weights) and a bound on
    the absolute error of the computed weights; ``underflow``: the dtype's subnormal spacing, the
    absolute error of a weight at the 1e-45 floor or below the normal range."""
    sd = (2.0 - 2.0 * s).clamp_min(0.0)
    d_raw = sd.sqrt()
    clamped = d_raw < lower_cutoff * (1 - _NEAR)
    d = torch.where(clamped, torch.full_like(d_raw, lower_cutoff), d_raw)
    x = 0.25 * d.square()
    inner = (1.0 - x).clamp_min(1e-8)
    log_d, log_inner = d.log(), inner.log()
    log_w = (2.0 - n) * log_d - ((n - 3.0) / 2.0) * log_inner
    dlogw_dd = (2.0 - n) / d + ((n - 3.0) / 2.0) * (0.5 * d) / inner
    # ds -> d: d(d)/ds = -1/d away from the clamp (slope 0 below it).
    slope_s = torch.where(clamped, torch.zeros_like(d), dlogw_dd.abs() / d.clamp_min(1e-300))
    from_s = slope_s * sigma
    # The evaluation: 2 - 2s and sqrt (u each; sqrt halves the first), log d (2u), (2 - n) * (u),
    # d^2 (u), 1 - x (u), log (2u), (n - 3)/2 * (u), the difference (u).
    from_d = torch.where(clamped, torch.zeros_like(d), dlogw_dd.abs() * d * (0.5 * u + u))
    term1 = abs(2.0 - n) * log_d.abs() * (2 * u + u)
    term2 = abs((n - 3.0) / 2.0) * ((u * x + u * inner) / inner + 2 * u * log_inner.abs()) \
        + u * abs((n - 3.0) / 2.0) * log_inner.abs()
    e_log_w = from_s + from_d + term1 + term2 + u * log_w.abs()
    keep = (d <= upper_cutoff).double()
    w = (log_w - log_w.max(dim=1, keepdim=True).values).exp() * keep
    w = w.clamp_min(1e-45)
    w = w / w.sum(dim=1, keepdim=True)
    # Numerator and normaliser each evaluate log w (exp at 1 ulp, the sum, the division).
    k = s.shape[1]
    rel = e_log_w + 2 * u + (w * (e_log_w + 2 * u)).sum(1, keepdim=True) + accumulation(k) + u
    near = ((d_raw - upper_cutoff).abs() <= _NEAR * upper_cutoff).double()
    return w, w * rel + w * near + underflow


def _forward_errors(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff, dtype):
    """The float64 logits, weights, softmax and lse, with bounds on the computed logits' and lse's errors."""
    q, k, queue = (t.detach().double() for t in (q, k, queue))
    u = unit_roundoff(dtype)
    n = q.shape[1]
    kk = queue.shape[0]
    t = float(temperature)
    s_pos = (q * k).sum(1, keepdim=True)
    s_neg = q @ queue.t()
    sig_pos = accumulation(n, dtype) * (q.abs() * k.abs()).sum(1, keepdim=True)
    sig_neg = accumulation(n, dtype) * (q.abs() @ queue.abs().t())
    if weighting == "dance" and kk > 0:
        w_neg, dw_neg = _dance_weights_and_errors(s_neg, sig_neg, n, lower_cutoff, upper_cutoff, u, subnormal(dtype))
    else:
        w_neg, dw_neg = torch.ones_like(s_neg), torch.zeros_like(s_neg)
    s = torch.cat([s_pos, s_neg], 1)
    sig = torch.cat([sig_pos, sig_neg], 1)
    w = torch.cat([torch.ones_like(s_pos), w_neg], 1)
    dw = torch.cat([torch.zeros_like(s_pos), dw_neg], 1)
    logits = w * s / t
    dl = (sig * w + s.abs() * dw) / t + 2 * u * logits.abs()
    p = torch.softmax(logits, 1)
    lse = torch.logsumexp(logits, 1, keepdim=True)
    m = logits.max(1, keepdim=True).values
    # sum_j p_j (dl_j + u |l_j - m| + 2u): each term's relative error is its logit's absolute one;
    # the sum's (2 (K + 1) roundings), log(sum) = lse - m at 1 ulp, and the final + m.
    dlse = (p * (dl + u * (logits - m).abs())).sum(1, keepdim=True) + 2 * u + accumulation(2 * (kk + 1), dtype) \
        + 2 * u * (lse - m) + u * lse.abs()
    return dict(p=p, dl=dl, dlse=dlse, logits=logits, lse=lse, w=w, dw=dw)


def info_nce_value_bounds(q, k, queue, *, temperature, weighting, lower_cutoff=0.5, upper_cutoff=1.4,
                          dtype=torch.float32):
    """[2, B]: first-order bounds on (loss_i, lse_i) in closed form, from the same logit and lse
    errors as the gradients (loss = lse - l_0, one more rounding): for sizes where the marked
    model (info_nce_rows_error_model) would take too many backward passes."""
    parts = _forward_errors(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff, dtype)
    dl, dlse, loss = parts["dl"], parts["dlse"][:, 0], parts["lse"][:, 0] - parts["logits"][:, 0]
    return torch.stack([dlse + dl[:, 0] + unit_roundoff(dtype) * loss.abs(), dlse])


def info_nce_gradient_bounds(q, k, queue, g, h, *, temperature, weighting, lower_cutoff=0.5, upper_cutoff=1.4,
                             dtype=torch.float32, storage=None):
    """(bound on grad q [B, D], on grad k [B, D], on grad queue [K, D]) of sum(g loss + h lse) computed
    in ``dtype`` from these inputs, first order (multiply by tolerances.SECOND_ORDER). ``storage``:
    a narrower dtype (float16, bfloat16) the CUDA kernels round the softmax weights to for the
    tensor-core product and the gradients to on output (the arithmetic stays in ``dtype``)."""
    u = unit_roundoff(dtype)
    u_store = unit_roundoff(storage) if storage is not None else 0.0
    parts = _forward_errors(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff, dtype)
    q, k, queue, g, h = (t.detach().double() for t in (q, k, queue, g, h))
    b, kk = q.shape[0], queue.shape[0]
    t = float(temperature)
    p, dl, dlse, logits, lse, w, dw = (parts[n] for n in ("p", "dl", "dlse", "logits", "lse", "w", "dw"))
    dp = p * (dl + dlse + u * (logits - lse).abs() + 2 * u + u_store) + subnormal(storage or dtype)
    a = (g + h)[:, None]
    onehot = torch.zeros_like(p)
    onehot[:, 0] = 1.0
    r = a * p - g[:, None] * onehot
    dr = a.abs() * dp + u * r.abs()
    big_g = r * w / t
    dg = (dr * w + r.abs() * dw) / t + 2 * u * big_g.abs() + subnormal(dtype)
    def against_values(coef, absolute=True):  # sum_j coef_ij x_j, x_0 = k_i, x_j = queue_j
        kv, qv = (k.abs(), queue.abs()) if absolute else (k, queue)
        return coef[:, :1] * kv + coef[:, 1:] @ qv

    bq = against_values(dg) + accumulation(kk + 3, dtype) * against_values(big_g.abs())
    bk = (dg[:, :1] + u * big_g[:, :1].abs()) * q.abs()
    bqueue = dg[:, 1:].t() @ q.abs() + accumulation(b + 2, dtype) * (big_g[:, 1:].abs().t() @ q.abs())
    if storage is not None:  # the result rounded to storage: u of its size, or a subnormal step
        sizes = (against_values(big_g, absolute=False), big_g[:, :1] * q, big_g[:, 1:].t() @ q)
        bq, bk, bqueue = ((bd + u_store * (v.abs() + bd) + subnormal(storage)) for bd, v in zip((bq, bk, bqueue), sizes))
    return bq, bk, bqueue
