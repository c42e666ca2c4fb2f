"""Typed wrappers of the compiled operators (torch.ops.diva_ext.*).

Each wrapper documents shapes and semantics; the operator itself validates its arguments and
names the one that is wrong.
"""

import operator
from typing import Optional

import torch


def pairwise_distance(
    x: torch.Tensor, y: Optional[torch.Tensor] = None, *, squared: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` and the rows of ``y``.

    Args:
        x: [N, D] float tensor (float16/bfloat16 too on CUDA).
        y: [M, D] tensor of x's dtype and device; ``None`` means ``x`` (and then the diagonal is
            computed exactly).
        squared: return squared distances ``s`` instead of ``sqrt(max(s, eps))``.
        eps: floor under the square root; where it (or ``s >= 0``) is active the gradient is 0.

    Returns:
        [N, M] tensor, ``s_ij = max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0)``, with near points
        recomputed by direct difference (self-distance of unit vectors <= 1e-5 in float32).
        So are pairs beyond the expansion's range (rows whose squares overflow, e.g. float32
        rows beyond ~1.8e19, or underflow), rescaled: every finite input gives distances
        accurate to a few ulps, inf only where the true value exceeds the dtype.
        Differentiable with respect to ``x`` and ``y``, to any order (under create_graph=True
        the backward runs as PyTorch ops, memory O(N * M) like the incoming gradient).

    Raises:
        RuntimeError: naming ``x`` or ``y`` when it holds NaN or inf (as the other ops do; the
            clamp would otherwise turn a NaN into a plausible distance).
    """
    return torch.ops.diva_ext.pairwise_distance(x, y, bool(squared), float(eps))


def _integer_or_none(value, op: str, name: str) -> Optional[int]:
    """``value`` as an int (anything with __index__), None kept; floats, strings and bools are a
    TypeError naming the argument rather than silently truncated."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an integer or None, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer or None, got {value!r}") from None


def sphere_dimension(dim, op: str) -> Optional[int]:
    """The weight's sphere dimension n: None (meaning D) or an integer >= 2. The operator reads 0
    as D; here that is None's job, so 0 (or False) is refused rather than silently meaning D."""
    dim = _integer_or_none(dim, op, "dim")
    if dim is not None and dim < 2:
        raise ValueError(f"{op}: dim must be None (meaning D) or an integer >= 2, got {dim}")
    return dim


def _seed_and_offset(generator: Optional[torch.Generator]):
    """Two 62-bit integers drawn from ``generator`` (the default CPU generator when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    words = torch.randint(0, 2**62, (2,), generator=generator, device=device, dtype=torch.int64)
    seed, offset = words.tolist()
    return seed, offset


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
    """One distance-weighted negative per anchor (Wu et al. 2017, as used by DiVA).

    For anchor ``a`` and candidate ``j`` with ``d = max(|x_a - x_j|, lower_cutoff)`` and
    ``n = dim`` (D when None), the weight is ``w = d^(2-n) * max(1 - d^2/4, 1e-8)^(-(n-3)/2)``, the inverse
    of the density of distances between uniform points on the sphere. Candidates are the samples
    whose label differs from the anchor's and whose distance is below ``upper_cutoff``; the pick
    is drawn with probability ``w / sum w`` (Gumbel-max with Philox noise keyed by the call's
    seed and offset, the anchor's position and the candidate). An anchor with different-label
    samples but none within the cutoff draws uniformly among them; one with none gets -1.

    Args:
        x: [B, D] L2-normalised embeddings (float32/float64; float16/bfloat16 too on CUDA); no
            gradient flows (x may require grad: it is read as data).
        labels: int64 [B].
        anchors: int64 [T], indices into the batch (repeats allowed: each entry draws anew).
        lower_cutoff: distances below it count as it (> 0).
        upper_cutoff: candidates must be closer than this (>= lower_cutoff; inf for no cutoff).
        dim: the sphere's dimension n in the weight (an integer >= 2); None means D.
        generator: the source of the call's seed and offset (the default generator when None),
            so ``torch.manual_seed`` makes runs reproducible and successive calls draw anew.

    Returns:
        int64 [T] on x's device: indices into the batch, or -1.
    """
    dim = sphere_dimension(dim, "distance_weighted_negatives")
    seed, offset = _seed_and_offset(generator)
    return torch.ops.diva_ext.distance_weighted_negatives(
        x, labels, anchors, float(lower_cutoff), float(upper_cutoff), dim or 0, seed, offset
    )


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
    """InfoNCE of queries against their keys and a memory queue, without the [B, K+1] logits.

    With ``s+_i = <q_i, k_i>`` and ``s_ij = <q_i, queue_j>``: ``lse_i = log(exp(s+_i / T) +
    sum_j exp(c_ij s_ij / T))`` and ``loss_i = lse_i - s+_i / T``, where ``c_ij = 1`` for
    ``weighting="none"`` (MoCo) and DiVA's distance-adapted weight for ``"dance"``: with
    ``d_ij = max(sqrt(2 - 2 s_ij), lower_cutoff)`` and ``n = D``, ``log w_ij = (2 - n) log d_ij -
    (n - 3)/2 log max(1 - d_ij^2 / 4, 1e-8)``, ``w_ij = exp(log w_ij - max_j log w_ij)``, 0 where
    ``d_ij > upper_cutoff``, floored at 1e-45 and normalised to sum 1 over the row (constants:
    no gradient flows through the weights).

    Args:
        q: [B, D] queries, k: [B, D] their positive keys, queue: [K, D] negatives; rows
            L2-normalised by the caller; one device and dtype (float32/float64; float16/bfloat16
            too on CUDA, with float32 accumulation).
        temperature: T, at least 2^-126 (float32, bfloat16), 2^-1022 (float64), 2^-14
            (float16); for "dance" at least 2^-30 (float32 accumulation), 2^-61 (float64). Below,
            the logits of unit rows leave the dtype's range (csrc/include/diva_ext/
            info_nce_checks.h): a RuntimeError naming temperature and its bound.
        weighting: "none" or "dance".
        lower_cutoff: "dance" only: distances below it count as it (> 0).
        upper_cutoff: "dance" only: weight 0 beyond it (>= lower_cutoff; inf for no cutoff).

    Returns:
        (loss, lse), each [B] in q's dtype. Differentiable with respect to q, k and queue (an
        in-batch setup passes the other view as the queue); first derivatives only:
        differentiating the gradient raises a RuntimeError (use diva_ext.reference.info_nce for
        second derivatives). Extra memory O(B * D + tile): when q
        needs a gradient and the queue does not (MoCo), the forward pass also accumulates the
        attention-style term of q's gradient, and backward costs O(B * D); otherwise backward
        recomputes the logits tile by tile.
    """
    args = (float(temperature), str(weighting), float(lower_cutoff), float(upper_cutoff))
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or queue.requires_grad):
        save_o = q.requires_grad and not queue.requires_grad
        loss, lse, _, _ = torch.ops.diva_ext._info_nce_forward(q, k, queue, *args, save_o)
        return loss, lse
    return torch.ops.diva_ext.info_nce(q, k, queue, *args)


def supervised_info_nce(
    q: torch.Tensor,
    labels: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    *,
    temperature: float = 0.07,
    return_positives: bool = False,
):
    """Supervised contrastive loss (SupCon, the mean outside the log) of queries against a
    labelled memory, without the [B, K] logits.

    With ``t_ij = <q_i, memory_j> / T`` and the positives ``P(i) = {j : memory_labels[j] ==
    labels[i]}``: ``lse_i = log sum_j exp(t_ij)`` over all K memory rows and ``loss_i = lse_i -
    mean_{j in P(i)} t_ij``. A row without positives (``P(i)`` empty) has ``loss_i = 0`` and no
    gradient through its loss (its ``lse_i`` keeps one); ``return_positives`` reports
    ``|P(i)|``, so such rows can be counted or left out of a mean. K = 0: ``lse = -inf`` (log of
    an empty sum, as torch.logsumexp), loss 0.

    Args:
        q: [B, D] queries, memory: [K, D]; rows L2-normalised by the caller; one device and dtype
            (float32/float64).
        labels: int64 [B]; memory_labels: int64 [K], on q's device.
        temperature: T, finite and > 0.
        return_positives: also return the int64 [B] positive counts ``|P(i)|``.

    Returns:
        (loss, lse), each [B] in q's dtype, or (loss, lse, positives). Differentiable with
        respect to q and memory (pass the batch itself, or a memory holding it, for in-batch
        positives); first derivatives only (diva_ext.reference.supervised_info_nce has second
        derivatives). Extra memory O(B * D + tile): when q needs a gradient and the memory does
        not (a detached memory of past embeddings), the forward pass also keeps O_i = sum_j
        p_ij memory_j and the mean positive row, and backward costs O(B * D) without reading the
        memory; otherwise backward recomputes the logits tile by tile.
    """
    args = (q, labels, memory, memory_labels, float(temperature))
    if return_positives or (torch.is_grad_enabled() and (q.requires_grad or memory.requires_grad)):
        save_o = torch.is_grad_enabled() and q.requires_grad and not memory.requires_grad
        loss, lse, positives, _, _ = torch.ops.diva_ext._supervised_info_nce_forward(*args, save_o)
        return (loss, lse, positives) if return_positives else (loss, lse)
    return torch.ops.diva_ext.supervised_info_nce(*args)
