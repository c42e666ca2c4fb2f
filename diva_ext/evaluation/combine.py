"""The test-time embedding: DiVA's heads, weighted, concatenated, re-normalised."""

from typing import Mapping, Optional

import torch
import torch.nn.functional as F


def combine_embeddings(
    heads: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, float]] = None
) -> torch.Tensor:
    """Concatenate L2-normalised heads, each scaled by its weight, and L2-normalise the result.

    Each head is normalised first so that a weight means the same thing whatever the head's scale
    (DiVA's heads are already unit vectors; normalising them again changes nothing).

    Args:
        heads: name -> [N, D_h] float tensor; same N, dtype and device for all; concatenated in
            the mapping's order.
        weights: name -> weight >= 0 for every head (no other names); ``None`` weighs all by 1.
            A zero weight keeps the head's columns, as zeros, so the dimension does not change.

    Returns:
        [N, sum D_h] tensor of unit rows (rows that are zero in every weighted head stay zero).
    """
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError("heads must be a non-empty mapping of name -> [N, D] tensor")
    if weights is None:
        weights = {name: 1.0 for name in heads}
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of head name -> float, got {type(weights).__name__}")
    if set(weights) != set(heads):
        raise ValueError(
            f"weights must name exactly the heads {sorted(heads)}; "
            f"missing {sorted(set(heads) - set(weights))}, unknown {sorted(set(weights) - set(heads))}"
        )
    for name, w in weights.items():
        if not float(w) >= 0.0 or float(w) == float("inf"):
            raise ValueError(f"weights[{name!r}] must be a finite number >= 0, got {w!r}")
    if all(float(w) == 0.0 for w in weights.values()):
        raise ValueError("weights are all zero; at least one head must count")
    first_name, first = next(iter(heads.items()))
    parts = []
    for name, head in heads.items():
        if not isinstance(head, torch.Tensor) or head.ndim != 2 or not head.is_floating_point():
            raise ValueError(f"heads[{name!r}] must be a [N, D] float tensor")
        if head.shape[0] != first.shape[0] or head.device != first.device or head.dtype != first.dtype:
            raise ValueError(
                f"heads[{name!r}] is {tuple(head.shape)} {head.dtype} on {head.device}, but "
                f"heads[{first_name!r}] is {tuple(first.shape)} {first.dtype} on {first.device}; "
                "all heads need the same N, dtype and device"
            )
        parts.append(float(weights[name]) * F.normalize(head, dim=1))
    return F.normalize(torch.cat(parts, dim=1), dim=1)
