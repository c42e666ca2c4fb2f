"""Fake kernels and autograd of diva_ext::supervised_info_nce and its helpers.

As info_nce's: the public op's backward recomputes everything; ``_supervised_info_nce_forward``
(what diva_ext.ops.supervised_info_nce calls when gradients are needed) also returns the row
statistics, the positive counts and, when q needs a gradient and the memory does not, O and the
mean positive rows, so that backward is O(B * D) without the memory.
"""

import torch

from diva_ext._registrations.info_nce import (  # noqa: F401  (STATS_COLUMNS: the same layout)
    _FLOAT_ANY, _FLOAT_CPU, STATS_COLUMNS, _acc_dtype, _grads_to_inputs)
from diva_ext._registrations.once_differentiable import refuse_double_backward


def _check(op, q, labels, memory, memory_labels, temperature):
    torch._check(q.dim() == 2, lambda: f"{op}: q must be a 2-D tensor [rows, dim], got {q.dim()}-D")
    torch._check(
        memory.dim() == 2, lambda: f"{op}: memory must be a 2-D tensor [rows, dim], got {memory.dim()}-D"
    )
    allowed = _FLOAT_CPU if q.device.type == "cpu" else _FLOAT_ANY
    torch._check(q.dtype in allowed, lambda: f"{op}: q must be a floating tensor, got {q.dtype}")
    torch._check(memory.device == q.device, lambda: f"{op}: q and memory must be on the same device")
    torch._check(memory.dtype == q.dtype, lambda: f"{op}: q and memory must have the same dtype")
    torch._check(
        memory.shape[1] == q.shape[1], lambda: f"{op}: memory must have the feature dimension D of q"
    )
    for name, lab, rows, rows_name in (("labels", labels, q, "q"), ("memory_labels", memory_labels, memory, "memory")):
        torch._check(lab.dim() == 1, lambda: f"{op}: {name} must be a 1-D tensor")
        torch._check(lab.dtype == torch.int64, lambda: f"{op}: {name} must be int64, got {lab.dtype}")
        torch._check(
            lab.shape[0] == rows.shape[0],
            lambda: f"{op}: {name} must have one entry per row of {rows_name} ({rows.shape[0]}), got {lab.shape[0]}",
        )
        torch._check(lab.device == q.device, lambda: f"{op}: {rows_name} and {name} must be on the same device")
    torch._check(
        temperature > 0 and temperature != float("inf"),
        lambda: f"{op}: temperature must be finite and > 0, got {temperature}",
    )


@torch.library.register_fake("diva_ext::supervised_info_nce")
def _fake(q, labels, memory, memory_labels, temperature):
    _check("supervised_info_nce", q, labels, memory, memory_labels, temperature)
    return q.new_empty((q.shape[0],)), q.new_empty((q.shape[0],))


@torch.library.register_fake("diva_ext::_supervised_info_nce_forward")
def _forward_fake(q, labels, memory, memory_labels, temperature, save_o):
    _check("_supervised_info_nce_forward", q, labels, memory, memory_labels, temperature)
    b, d = q.shape
    acc = _acc_dtype(q.dtype)
    o = q.new_empty((2, b, d), dtype=acc) if save_o else q.new_empty((0,))
    return (q.new_empty((b,)), q.new_empty((b,)), labels.new_empty((b,)),
            q.new_empty((b, STATS_COLUMNS), dtype=acc), o)


@torch.library.register_fake("diva_ext::_supervised_info_nce_backward")
def _backward_fake(grad_loss, grad_lse, q, labels, memory, memory_labels, stats, positives, o, temperature,
                   needs_grad_q, needs_grad_memory):
    _check("_supervised_info_nce_backward", q, labels, memory, memory_labels, temperature)
    return (q.new_empty(q.shape) if needs_grad_q else q.new_empty((0,)),
            q.new_empty(memory.shape) if needs_grad_memory else q.new_empty((0,)))


_SECOND_ORDER_HINT = (
    "For second derivatives use diva_ext.reference.supervised_info_nce (explicit [B, K] logits)."
)


def _run_backward(ctx, grad_loss, grad_lse, q, labels, memory, memory_labels, stats, positives, o, needs):
    """The backward op; under create_graph its results raise if differentiated again."""
    if grad_loss is None:  # outputs that took no part in the objective arrive as None
        grad_loss = q.new_zeros((q.shape[0],))
    if grad_lse is None:
        grad_lse = q.new_zeros((q.shape[0],))
    args = (grad_loss, grad_lse, q, labels, memory, memory_labels, stats, positives, o, ctx.temperature, *needs)
    if not torch.is_grad_enabled():
        return torch.ops.diva_ext._supervised_info_nce_backward(*args)
    with torch.no_grad():
        grads = torch.ops.diva_ext._supervised_info_nce_backward(*args)
    return refuse_double_backward("supervised_info_nce", tuple(grads), (grad_loss, grad_lse, q, memory),
                                  _SECOND_ORDER_HINT)


# ---- supervised_info_nce: backward recomputes the statistics and the tiles ----------------------


def _setup_context(ctx, inputs, output):
    q, labels, memory, memory_labels, temperature = inputs
    ctx.save_for_backward(q, labels, memory, memory_labels)
    ctx.temperature = temperature


def _backward(ctx, grad_loss, grad_lse):
    q, labels, memory, memory_labels = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[2])
    if not any(needs):
        return (None,) * 5
    gq, gm = _run_backward(ctx, grad_loss, grad_lse, q, labels, memory, memory_labels, None, None, None, needs)
    gq, gm = _grads_to_inputs(needs, (gq, gm))
    return gq, None, gm, None, None


torch.library.register_autograd("diva_ext::supervised_info_nce", _backward, setup_context=_setup_context)


# ---- _supervised_info_nce_forward: backward from the saved statistics (and O) -------------------


def _forward_setup_context(ctx, inputs, output):
    q, labels, memory, memory_labels, temperature, save_o = inputs
    _, _, positives, stats, o = output
    ctx.mark_non_differentiable(positives, stats, o)
    # The memory (and its labels) are only read again when the tiles are recomputed; otherwise
    # [0, D] / [0] stand-ins keep them out of the graph, so a FIFO memory may be updated in place
    # before backward.
    needs_q, needs_memory = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    tiles_again = needs_memory or (needs_q and not save_o)
    if not tiles_again:
        memory, memory_labels = memory.new_empty((0, memory.shape[1])), memory_labels.new_empty((0,))
    ctx.save_for_backward(q, labels, memory, memory_labels, stats, positives, o if save_o else None)
    ctx.temperature = temperature


def _forward_backward(ctx, grad_loss, grad_lse, _grad_positives, _grad_stats, _grad_o):
    q, labels, memory, memory_labels, stats, positives, o = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[2])
    if not any(needs):
        return (None,) * 6
    gq, gm = _run_backward(ctx, grad_loss, grad_lse, q, labels, memory, memory_labels, stats, positives, o, needs)
    gq, gm = _grads_to_inputs(needs, (gq, gm))
    return gq, None, gm, None, None, None


torch.library.register_autograd(
    "diva_ext::_supervised_info_nce_forward", _forward_backward, setup_context=_forward_setup_context
)
