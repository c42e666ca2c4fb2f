"""Fake kernels and autograd of diva_ext::info_nce and its helpers.

Two differentiable entry points share one backward op:
- ``info_nce`` (the public schema): its backward recomputes everything it needs (a forward pass
  for the row statistics, then the tiles).
- ``_info_nce_forward`` (what diva_ext.ops.info_nce calls when gradients are needed): it also
  returns the row statistics and, when q needs a gradient and the queue does not (MoCo), the
  attention-style term O of q's gradient, so that backward is O(B * D) without the queue.
"""

import torch

from diva_ext._info_nce_temperature import temperature_error
from diva_ext._registrations.once_differentiable import refuse_double_backward

_FLOAT_CPU = (torch.float32, torch.float64)
_FLOAT_ANY = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Columns of the saved row statistics: lse, loss, DaNCE's row constants and lse's rounding error
# (csrc math/info_nce.h).
STATS_COLUMNS = 6


def _check(op, q, k, queue, temperature, weighting):
    torch._check(q.dim() == 2, lambda: f"{op}: q must be a 2-D tensor [rows, dim], got {q.dim()}-D")
    torch._check(k.dim() == 2, lambda: f"{op}: k must be a 2-D tensor [rows, dim], got {k.dim()}-D")
    torch._check(
        queue.dim() == 2, lambda: f"{op}: queue must be a 2-D tensor [rows, dim], got {queue.dim()}-D"
    )
    allowed = _FLOAT_CPU if q.device.type == "cpu" else _FLOAT_ANY
    torch._check(q.dtype in allowed, lambda: f"{op}: q must be a floating tensor, got {q.dtype}")
    for name, t in (("k", k), ("queue", queue)):
        torch._check(t.device == q.device, lambda: f"{op}: q and {name} must be on the same device")
        torch._check(t.dtype == q.dtype, lambda: f"{op}: q and {name} must have the same dtype")
    torch._check(q.shape == k.shape, lambda: f"{op}: q and k must have the same shape [B, D]")
    torch._check(
        queue.shape[1] == q.shape[1], lambda: f"{op}: queue must have the feature dimension D of q"
    )
    error = temperature_error(op, temperature, q.dtype, weighting)
    torch._check(error is None, lambda: error)


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("diva_ext::info_nce")
def _info_nce_fake(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff):
    _check("info_nce", q, k, queue, temperature, weighting)
    return q.new_empty((q.shape[0],)), q.new_empty((q.shape[0],))


@torch.library.register_fake("diva_ext::_info_nce_forward")
def _info_nce_forward_fake(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff, save_o):
    _check("_info_nce_forward", q, k, queue, temperature, weighting)
    b, d = q.shape
    acc = _acc_dtype(q.dtype)
    o = q.new_empty((b, d), dtype=acc) if save_o else q.new_empty((0,))
    return q.new_empty((b,)), q.new_empty((b,)), q.new_empty((b, STATS_COLUMNS), dtype=acc), o


@torch.library.register_fake("diva_ext::_info_nce_backward")
def _info_nce_backward_fake(
    grad_loss, grad_lse, q, k, queue, stats, o, temperature, weighting, lower_cutoff, upper_cutoff,
    needs_grad_q, needs_grad_k, needs_grad_queue,
):
    _check("_info_nce_backward", q, k, queue, temperature, weighting)
    empty = q.new_empty((0,))
    return (
        q.new_empty(q.shape) if needs_grad_q else empty,
        q.new_empty(k.shape) if needs_grad_k else q.new_empty((0,)),
        q.new_empty(queue.shape) if needs_grad_queue else q.new_empty((0,)),
    )


def _grads_or_zeros(q, grad_loss, grad_lse):
    # Outputs that took no part in the objective may arrive as None.
    if grad_loss is None:
        grad_loss = q.new_zeros((q.shape[0],))
    if grad_lse is None:
        grad_lse = q.new_zeros((q.shape[0],))
    return grad_loss, grad_lse


def _params(ctx):
    return ctx.temperature, ctx.weighting, ctx.lower_cutoff, ctx.upper_cutoff


def _store_params(ctx, temperature, weighting, lower_cutoff, upper_cutoff):
    ctx.temperature, ctx.weighting = temperature, weighting
    ctx.lower_cutoff, ctx.upper_cutoff = lower_cutoff, upper_cutoff


def _grads_to_inputs(needs, grads):
    return tuple(g if n else None for n, g in zip(needs, grads))


_SECOND_ORDER_HINT = (
    "For second derivatives use diva_ext.reference.info_nce (explicit [B, K+1] logits)."
)


def _run_backward(op, grad_loss, grad_lse, q, k, queue, stats, o, ctx, needs):
    """The backward op; under create_graph its results raise if differentiated again."""
    saved = (grad_loss, grad_lse, q, k, queue)
    if not torch.is_grad_enabled():
        return torch.ops.diva_ext._info_nce_backward(
            grad_loss, grad_lse, q, k, queue, stats, o, *_params(ctx), *needs
        )
    with torch.no_grad():
        grads = torch.ops.diva_ext._info_nce_backward(
            grad_loss, grad_lse, q, k, queue, stats, o, *_params(ctx), *needs
        )
    return refuse_double_backward(op, tuple(grads), saved, _SECOND_ORDER_HINT)


# ---- info_nce: backward recomputes the statistics and the tiles --------------------------------


def _info_nce_setup_context(ctx, inputs, output):
    q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff = inputs
    ctx.save_for_backward(q, k, queue)
    _store_params(ctx, temperature, weighting, lower_cutoff, upper_cutoff)


def _info_nce_backward(ctx, grad_loss, grad_lse):
    q, k, queue = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    if not any(needs):
        return (None,) * 7
    grad_loss, grad_lse = _grads_or_zeros(q, grad_loss, grad_lse)
    grads = _run_backward("info_nce", grad_loss, grad_lse, q, k, queue, None, None, ctx, needs)
    return _grads_to_inputs(needs, grads) + (None,) * 4


torch.library.register_autograd(
    "diva_ext::info_nce", _info_nce_backward, setup_context=_info_nce_setup_context
)


# ---- _info_nce_forward: backward from the saved statistics (and O) ------------------------------


def _forward_setup_context(ctx, inputs, output):
    q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff, save_o = inputs
    _, _, stats, o = output
    ctx.mark_non_differentiable(stats, o)
    # The queue is only read again when it needs a gradient itself (then the tiles are
    # recomputed); otherwise a [0, D] stand-in keeps it out of the graph, so a MemoryQueue may be
    # updated in place before backward.
    needs_q, needs_queue = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    tiles_again = needs_queue or (needs_q and not save_o)
    queue_saved = queue if tiles_again else queue.new_empty((0, queue.shape[1]))
    ctx.save_for_backward(q, k, queue_saved, stats, o if save_o else None)
    _store_params(ctx, temperature, weighting, lower_cutoff, upper_cutoff)


def _forward_backward(ctx, grad_loss, grad_lse, _grad_stats, _grad_o):
    q, k, queue, stats, o = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    if not any(needs):
        return (None,) * 8
    grad_loss, grad_lse = _grads_or_zeros(q, grad_loss, grad_lse)
    grads = _run_backward("info_nce", grad_loss, grad_lse, q, k, queue, stats, o, ctx, needs)
    return _grads_to_inputs(needs, grads) + (None,) * 5


torch.library.register_autograd(
    "diva_ext::_info_nce_forward", _forward_backward, setup_context=_forward_setup_context
)
