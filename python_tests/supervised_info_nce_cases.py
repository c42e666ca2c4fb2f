"""Inputs and error bounds of the supervised_info_nce tests (CPU kernels and the CUDA emulation)."""

import functools

import torch
import torch.nn.functional as F

from diva_ext import reference

from supervised_info_nce_error_model import (positive_mask, supervised_info_nce_gradient_bounds,
                                             supervised_info_nce_rows)
from tolerances import SECOND_ORDER, first_order_error_bound


def labelled_inputs(b, k, d, generator, dtype=torch.float32, classes=7, spread=0.7):
    """Queries and memory rows near their class's centre (so positives have the larger logits),
    labels in [0, classes); query labels also take the value `classes`, absent from the memory, so
    that some rows have no positives."""
    centres = F.normalize(torch.randn(classes + 1, d, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.randint(0, classes + 1, (b,), generator=generator)
    memory_labels = torch.randint(0, classes, (k,), generator=generator)
    q = F.normalize(centres[labels] + spread * torch.randn(b, d, generator=generator, dtype=torch.float64), dim=1)
    memory = F.normalize(centres[memory_labels] + spread * torch.randn(k, d, generator=generator, dtype=torch.float64),
                         dim=1)
    return q.to(dtype), labels, memory.to(dtype), memory_labels


def ref64(q, labels, memory, memory_labels, **kw):
    return reference.supervised_info_nce(q.double(), labels, memory.double(), memory_labels, **kw)


def rows_error_bound(q, labels, memory, memory_labels, dtype=torch.float32, *, temperature):
    """[2, B]: SECOND_ORDER x the first-order rounding bound of (loss_i, lse_i) computed in dtype,
    row by row; doubled for float64 (the float64 oracle's own error obeys the same model)."""
    mask = positive_mask(labels, memory_labels)
    f = functools.partial(supervised_info_nce_rows, temperature=temperature)
    rows = [first_order_error_bound(lambda p, qi, mem: f(p, qi, mem, mask[i:i + 1]), (q[i:i + 1], memory), dtype)
            for i in range(q.shape[0])]
    bound = SECOND_ORDER * torch.cat(rows, 1) if rows else torch.zeros(2, 0, dtype=torch.float64)
    return 2 * bound if dtype == torch.float64 else bound


def gradient_bounds(q, labels, memory, memory_labels, g, h, dtype=torch.float32, *, temperature):
    """SECOND_ORDER x the closed-form bounds (grad q, grad memory); doubled for float64."""
    double = 2 if dtype == torch.float64 else 1
    bounds = supervised_info_nce_gradient_bounds(q, memory, positive_mask(labels, memory_labels), g, h,
                                                 temperature=temperature, dtype=dtype)
    return [double * SECOND_ORDER * x for x in bounds]
