"""Fake kernels of diva_ext::distance_weighted_negatives and its Philox test hook.

Neither op is differentiable (their outputs are indices), so there is no autograd formula.
"""

import math

import torch

_FLOAT_CPU = (torch.float32, torch.float64)
_FLOAT_ANY = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(x, labels, anchors, lower_cutoff, upper_cutoff, dim):
    op = "distance_weighted_negatives"
    torch._check(x.dim() == 2, lambda: f"{op}: x must be a 2-D tensor [rows, dim], got {x.dim()}-D")
    allowed = _FLOAT_CPU if x.device.type == "cpu" else _FLOAT_ANY
    torch._check(x.dtype in allowed, lambda: f"{op}: x must be a floating tensor, got {x.dtype}")
    torch._check(labels.dim() == 1, lambda: f"{op}: labels must be a 1-D tensor [B]")
    torch._check(labels.dtype == torch.int64, lambda: f"{op}: labels must be int64, got {labels.dtype}")
    torch._check(
        labels.shape[0] == x.shape[0],
        lambda: f"{op}: labels must have one entry per row of x ({x.shape[0]}), got {labels.shape[0]}",
    )
    torch._check(anchors.dim() == 1, lambda: f"{op}: anchors must be a 1-D tensor [T]")
    torch._check(anchors.dtype == torch.int64, lambda: f"{op}: anchors must be int64, got {anchors.dtype}")
    torch._check(labels.device == x.device, lambda: f"{op}: x and labels must be on the same device")
    torch._check(anchors.device == x.device, lambda: f"{op}: x and anchors must be on the same device")
    torch._check(
        math.isfinite(lower_cutoff) and lower_cutoff > 0,
        lambda: f"{op}: lower_cutoff must be finite and > 0, got {lower_cutoff}",
    )
    torch._check(
        not math.isnan(upper_cutoff) and upper_cutoff > 0,
        lambda: f"{op}: upper_cutoff must be > 0 (inf for no cutoff), got {upper_cutoff}",
    )
    torch._check(
        upper_cutoff >= lower_cutoff,
        lambda: f"{op}: upper_cutoff must be >= lower_cutoff ({lower_cutoff}), got {upper_cutoff}",
    )
    torch._check(dim >= 0, lambda: f"{op}: dim must be >= 0 (0 means x.size(1)), got {dim}")
    torch._check(dim != 1, lambda: f"{op}: dim must be 0 (meaning x.size(1)) or >= 2, got {dim}")


@torch.library.register_fake("diva_ext::distance_weighted_negatives")
def _distance_weighted_negatives_fake(x, labels, anchors, lower_cutoff, upper_cutoff, dim, seed, offset):
    _check(x, labels, anchors, lower_cutoff, upper_cutoff, dim)
    return anchors.new_empty(anchors.shape)


@torch.library.register_fake("diva_ext::_philox4x32_10")
def _philox4x32_10_fake(counters, key):
    torch._check(counters.dim() == 2 and counters.shape[1] == 4, lambda: "_philox4x32_10: counters must be [N, 4]")
    return counters.new_empty(counters.shape)
