"""The losses' shared convention for an empty batch (pytorch-metric-learning's "zero loss")."""

import torch


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values``; for no values at all, their sum: an exact 0 that keeps the graph,
    so backward gives every input zero gradients (``mean`` of nothing would be NaN)."""
    return values.mean() if values.numel() else values.sum()
