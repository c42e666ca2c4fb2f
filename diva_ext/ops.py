"""Typed wrappers of the compiled operators (torch.ops.diva_ext.*).

Each wrapper documents shapes and semantics; the operator itself validates its arguments and
names the one that is wrong.
"""

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
        Differentiable with respect to ``x`` and ``y``.
    """
    return torch.ops.diva_ext.pairwise_distance(x, y, bool(squared), float(eps))


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
    ``n = dim or D``, the weight is ``w = d^(2-n) * max(1 - d^2/4, 1e-8)^(-(n-3)/2)``, the inverse
    of the density of distances between uniform points on the sphere. Candidates are the samples
    whose label differs from the anchor's and whose distance is below ``upper_cutoff``; the pick
    is drawn with probability ``w / sum w`` (Gumbel-max with Philox noise keyed by the call's
    seed and offset, the anchor's position and the candidate). An anchor with different-label
    samples but none within the cutoff draws uniformly among them; one with none gets -1.

    Args:
        x: [B, D] L2-normalised embeddings (float32/float64; float16/bfloat16 too on CUDA); no
            gradient flows.
        labels: int64 [B].
        anchors: int64 [T], indices into the batch (repeats allowed: each entry draws anew).
        lower_cutoff: distances below it count as it (> 0).
        upper_cutoff: candidates must be closer than this (> 0; inf for no cutoff).
        dim: the sphere's dimension n in the weight; None means D.
        generator: the source of the call's seed and offset (the default generator when None),
            so ``torch.manual_seed`` makes runs reproducible and successive calls draw anew.

    Returns:
        int64 [T] on x's device: indices into the batch, or -1.
    """
    seed, offset = _seed_and_offset(generator)
    return torch.ops.diva_ext.distance_weighted_negatives(
        x, labels, anchors, float(lower_cutoff), float(upper_cutoff), int(dim or 0), seed, offset
    )
