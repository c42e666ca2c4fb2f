"""Independent float64 oracles of distance_weighted_negatives (docs/design.md §2.2), for the tests.

- `probabilities`: the exact categorical w / sum w of each anchor (with the fallback and -1 rules),
  written from the formula in the design, not from the kernels' code.
- `chi_square_pvalue`: goodness of fit of sampled indices to a categorical.
- `replay`: the picks the kernels must make for a (seed, offset): the same Philox4x32-10 noise
  (re-implemented here in NumPy from the published algorithm) with float64 log-weights and a
  full argmax over every candidate, so a candidate wrongly skipped by the kernels' bounds shows up.
"""

import math

import numpy as np
import torch
from scipy.stats import chisquare

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of uint32 counter words (broadcasting NumPy arrays) under key (k0, k1)."""
    c = [np.asarray(v, dtype=np.uint64) & _MASK for v in (c0, c1, c2, c3)]
    c0, c1, c2, c3 = np.broadcast_arrays(*c)
    k0, k1 = np.uint64(k0 & _MASK), np.uint64(k1 & _MASK)
    for r in range(10):
        if r > 0:
            k0 = np.uint64((int(k0) + _W0) & _MASK)
            k1 = np.uint64((int(k1) + _W1) & _MASK)
        p0 = np.uint64(_M0) * c0
        p1 = np.uint64(_M1) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & np.uint64(_MASK), (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & np.uint64(_MASK)
    return c0, c1, c2, c3


def exact_log_weights(x, labels, anchors, lower_cutoff=0.5, upper_cutoff=math.inf, dim=None):
    """[T, B] float64 log-weights (-inf where not a candidate) and the [T, B] different-label mask."""
    x64 = x.detach().double().cpu()
    lab = labels.cpu()
    anc = anchors.cpu()
    n = dim or x.shape[1]
    dist = torch.cdist(x64[anc], x64).clamp_min(0)
    d = dist.clamp_min(lower_cutoff)
    log_w = (2.0 - n) * torch.log(d) - ((n - 3.0) / 2.0) * torch.log(torch.clamp_min(1.0 - 0.25 * d * d, 1e-8))
    other = lab[anc][:, None] != lab[None, :]
    candidate = other & (dist < upper_cutoff)
    return log_w.masked_fill(~candidate, -math.inf), other


def probabilities(x, labels, anchors, lower_cutoff=0.5, upper_cutoff=math.inf, dim=None):
    """[T, B] float64 probabilities of each pick; rows of anchors without any negative are 0."""
    log_w, other = exact_log_weights(x, labels, anchors, lower_cutoff, upper_cutoff, dim)
    has = torch.isfinite(log_w).any(1, keepdim=True)
    p = torch.softmax(torch.where(has, log_w, torch.zeros_like(log_w)), dim=1) * has
    uniform = other.double() / other.sum(1, keepdim=True).clamp_min(1)
    return torch.where(has, p, uniform)


def noise(seed, offset, t, b):
    """(gumbel [T, B] float64, stage-2 words [T, B] uint64) of anchor positions t (array) and B."""
    seed, offset = seed & (2**64 - 1), offset & (2**64 - 1)
    t = np.asarray(t, dtype=np.uint64)[:, None]
    j = np.arange(b, dtype=np.uint64)[None, :]
    key = (seed & _MASK, seed >> 32)
    off = (offset & _MASK, offset >> 32)
    w1 = philox4x32_10(j >> np.uint64(3), t, off[0], off[1], *key)
    lane8 = (j & np.uint64(7)).astype(np.int64)
    word = np.choose(np.broadcast_to(lane8 // 2, w1[0].shape), w1)
    h = (word >> (np.uint64(16) * (j & np.uint64(1)))) & np.uint64(0xFFFF)
    w2 = philox4x32_10(j >> np.uint64(2), t | np.uint64(1 << 31), off[0], off[1], *key)
    r2 = np.choose(np.broadcast_to((j & np.uint64(3)).astype(np.int64), w2[0].shape), w2)
    k = (h << np.uint64(7)) | (r2 >> np.uint64(25))
    u = (2.0 * k.astype(np.float64) + 1.0) / 2.0**24
    return -np.log(-np.log(u)), r2


def replay(x, labels, anchors, seed, offset, lower_cutoff=0.5, upper_cutoff=math.inf, dim=None):
    """The picks for (seed, offset) by brute force in float64: int64 [T]."""
    log_w, other = exact_log_weights(x, labels, anchors, lower_cutoff, upper_cutoff, dim)
    t_count, b = log_w.shape
    if t_count == 0:
        return torch.empty(0, dtype=torch.int64)
    g, r2 = noise(seed, offset, np.arange(t_count), b)
    score = log_w.numpy() + g
    pick = np.argmax(score, axis=1)  # first maximum: ties go to the lowest index
    has = np.isfinite(log_w.numpy()).any(1)
    fallback_key = np.where(other.numpy(), r2.astype(np.int64), -1)
    fallback = np.argmax(fallback_key, axis=1)
    has_other = other.numpy().any(1)
    out = np.where(has, pick, np.where(has_other, fallback, -1))
    return torch.from_numpy(out.astype(np.int64))


def chi_square_pvalue(picks, probs, min_expected=5.0):
    """Goodness of fit of the picks (ints in [0, B)) to probs [B]; small bins are pooled.

    For a sampler that draws from probs the p-value is uniform on [0, 1] (to the chi-square
    approximation, bins of expected count >= 5), so ``p > tolerances.FAILURE`` falsely fails with
    probability FAILURE per comparison."""
    n = picks.numel()
    observed = torch.bincount(picks, minlength=probs.numel()).double()
    expected = probs * n
    assert observed[expected == 0].sum() == 0, "picked an index of probability 0"
    big = expected >= min_expected
    obs = torch.cat([observed[big], observed[~big].sum(0, keepdim=True)])
    exp = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    assert keep.sum() >= 2, "too few bins for a chi-square test"
    return chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue
