"""Pure-PyTorch versions of every diva_ext operator.

The test oracle, the benchmark baseline and the trainer's ``--ops reference``. They follow the
same contract as diva_ext.ops (docs/design.md §2) with ordinary PyTorch autograd.
"""

import math
from typing import Optional

import torch

from diva_ext._info_nce_temperature import temperature_error
from diva_ext.ops import sphere_dimension


def pairwise_distance(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, *, squared: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """Norm-expansion distances, as most DML code computes them: [N, D] x [M, D] -> [N, M]."""
    y = x if y is None else y
    s = (x.square().sum(1, keepdim=True) + y.square().sum(1) - 2.0 * x @ y.t()).clamp_min(0)
    return s if squared else s.clamp_min(eps).sqrt()


def distance_weighted_negatives(
    x: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    *,
    lower_cutoff: float = 0.5,
    upper_cutoff: float = float("inf"),
    dim: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """diva_ext.ops.distance_weighted_negatives in plain PyTorch: same distribution, other draws.

    Materialises the [T, B] log-weights; ``generator`` (on x's device) drives the noise.
    """
    return distance_weighted_sample(
        x.index_select(0, anchors),
        labels.index_select(0, anchors),
        x,
        labels,
        lower_cutoff=lower_cutoff,
        upper_cutoff=upper_cutoff,
        dim=dim,
        generator=generator,
    )


def distance_weighted_sample(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    *,
    lower_cutoff: float = 0.5,
    upper_cutoff: float = float("inf"),
    dim: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One distance-weighted negative among the rows of ``ref`` for each row of ``query``.

    Args:
        query: [T, D] and ref: [R, D], L2-normalised rows; query_labels: [T], ref_labels: [R].
        lower_cutoff, upper_cutoff, dim: as in diva_ext.ops.distance_weighted_negatives.
        generator: drives the noise (on the tensors' device; the default generator when None).

    Returns:
        int64 [T]: indices into ``ref`` drawn with probability w / sum w among the candidates
        (different label, closer than ``upper_cutoff``); uniform among the different-label rows
        when no candidate is within the cutoff; -1 when there is no different-label row.
    """
    dim = sphere_dimension(dim, "distance_weighted_sample")
    n = query.shape[1] if dim is None else dim
    if query.shape[0] == 0 or ref.shape[0] == 0:
        # No anchors, or nothing to pick from (max over an empty row is an error): the op's result.
        return torch.full((query.shape[0],), -1, dtype=torch.int64, device=query.device)
    c = query @ ref.t()  # [T, R] cosines
    candidate = query_labels[:, None] != ref_labels[None, :]
    if math.isfinite(upper_cutoff):
        candidate &= c > 1.0 - 0.5 * upper_cutoff * upper_cutoff  # dist < upper_cutoff
    s = c.mul_(-2.0).add_(2.0).clamp_min_(lower_cutoff * lower_cutoff)  # clamped squared distance
    log_q = (s * -0.25).add_(1.0).clamp_min_(1e-8).log_()
    log_w = s.log_().mul_((2.0 - n) / 2.0).add_(log_q, alpha=-(n - 3.0) / 2.0)
    del log_q
    # Gumbel-max as an exponential race: argmax_j log w_j - log E_j, E_j ~ Exp(1). Per-row
    # arithmetic in log space: rows whose log-weights span hundreds of nats are fine.
    log_e = torch.empty_like(log_w).exponential_(generator=generator).log_()
    score = log_w.sub_(log_e).masked_fill_(~candidate, float("-inf"))
    best, pick = score.max(1)
    fallback = _uniform_different_label(query_labels, ref_labels, generator)
    return torch.where(best > float("-inf"), pick, fallback)


def _uniform_different_label(query_labels, ref_labels, generator):
    """Per query, a uniform index among the ref rows with another label (-1 when none).

    In label-sorted order a label's rows are one run [lo, hi), so the others are the positions
    outside it: O((T + R) log R), no [T, R] matrix.
    """
    order = torch.argsort(ref_labels, stable=True)
    sorted_labels = ref_labels[order]
    lo = torch.searchsorted(sorted_labels, query_labels, right=False)
    hi = torch.searchsorted(sorted_labels, query_labels, right=True)
    n_other = ref_labels.shape[0] - (hi - lo)
    u = torch.empty(query_labels.shape, dtype=torch.float64, device=query_labels.device).uniform_(generator=generator)
    k = torch.minimum((u * n_other).long(), n_other - 1).clamp_min(0)
    pos = torch.where(k < lo, k, k + (hi - lo)).clamp_max(max(ref_labels.shape[0] - 1, 0))
    pick = order[pos] if ref_labels.shape[0] > 0 else torch.zeros_like(pos)
    return torch.where(n_other > 0, pick, torch.full_like(pick, -1))


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    *,
    temperature: float = 0.07,
    weighting: str = "none",
    lower_cutoff: float = 0.5,
    upper_cutoff: float = 1.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """diva_ext.ops.info_nce the way MoCo's code computes it: explicit [B, K+1] logits
    (einsum + cat + cross_entropy), DaNCE weights from dance_weights. Returns (loss, lse)."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)
    if weighting == "dance":
        l_neg = dance_weights(l_neg.detach(), q.shape[1], lower_cutoff, upper_cutoff) * l_neg
    elif weighting != "none":
        raise ValueError(f'info_nce: weighting must be "none" or "dance", got "{weighting}"')
    # The operator's range of temperatures (the same arguments are accepted by both).
    error = temperature_error("info_nce", temperature, q.dtype, weighting)
    if error is not None:
        raise ValueError(error)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return loss, torch.logsumexp(logits, dim=1)


def dance_weights(s: torch.Tensor, n: int, lower_cutoff: float = 0.5, upper_cutoff: float = 1.4) -> torch.Tensor:
    """DiVA's row-normalised distance-adapted weights (docs/design.md §2.3) of inner products s [B, K]."""
    if s.shape[1] == 0:
        return torch.ones_like(s)
    d = (2.0 - 2.0 * s).clamp_min(0.0).sqrt().clamp_min(lower_cutoff)
    log_w = (2.0 - n) * d.log() - ((n - 3.0) / 2.0) * (1.0 - 0.25 * d.square()).clamp_min(1e-8).log()
    w = (log_w - log_w.max(dim=1, keepdim=True).values).exp()
    w = w.masked_fill(d > upper_cutoff, 0.0).clamp_min(1e-45)
    return w / w.sum(dim=1, keepdim=True)


def supervised_info_nce(
    q: torch.Tensor,
    labels: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    *,
    temperature: float = 0.07,
) -> tuple[torch.Tensor, torch.Tensor]:
    """diva_ext.ops.supervised_info_nce the way SupCon code computes it: explicit [B, K] logits and
    a [B, K] positive mask (any dtype; float64 is the test oracle). Returns (loss, lse); rows
    without positives get loss 0 with no gradient through it."""
    logits = q @ memory.t() / temperature
    lse = torch.logsumexp(logits, dim=1)
    mask = labels[:, None] == memory_labels[None, :]
    n = mask.sum(1)
    mean_pos = (logits * mask).sum(1) / n.clamp_min(1).to(logits.dtype)
    loss = torch.where(n > 0, lse - mean_pos, torch.zeros_like(lse))
    return loss, lse
