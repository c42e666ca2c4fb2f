"""Fake kernels and autograd of diva_ext::pairwise_distance."""

import torch

_FLOAT_CPU = (torch.float32, torch.float64)
_FLOAT_ANY = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(x, y, eps):
    op = "pairwise_distance"
    torch._check(x.dim() == 2, lambda: f"{op}: x must be a 2-D tensor [rows, dim], got {x.dim()}-D")
    allowed = _FLOAT_CPU if x.device.type == "cpu" else _FLOAT_ANY
    torch._check(x.dtype in allowed, lambda: f"{op}: x must be a floating tensor, got {x.dtype}")
    torch._check(eps >= 0, lambda: f"{op}: eps must be finite and >= 0, got {eps}")
    if y is not None:
        torch._check(y.dim() == 2, lambda: f"{op}: y must be a 2-D tensor [rows, dim], got {y.dim()}-D")
        torch._check(y.device == x.device, lambda: f"{op}: x and y must be on the same device")
        torch._check(y.dtype == x.dtype, lambda: f"{op}: x and y must have the same dtype")
        torch._check(
            y.shape[1] == x.shape[1],
            lambda: f"{op}: x and y must have the same feature dimension D, got {x.shape} and {y.shape}",
        )


@torch.library.register_fake("diva_ext::pairwise_distance")
def _pairwise_distance_fake(x, y, squared, eps):
    _check(x, y, eps)
    m = x.shape[0] if y is None else y.shape[0]
    return x.new_empty((x.shape[0], m))


@torch.library.register_fake("diva_ext::_pairwise_distance_backward")
def _pairwise_distance_backward_fake(grad, x, y, out, squared, eps, needs_grad_x, needs_grad_y):
    _check(x, y, eps)
    grad_x = x.new_empty(x.shape) if needs_grad_x else x.new_empty((0,))
    if y is None or not needs_grad_y:
        return grad_x, x.new_empty((0,))
    return grad_x, y.new_empty(y.shape)


def _setup_context(ctx, inputs, output):
    x, y, squared, eps = inputs
    ctx.save_for_backward(x, y, output)
    ctx.squared = squared
    ctx.eps = eps


def _differentiable_backward(grad, x, y, out, squared, eps, needs_x, needs_y):
    """The backward kernel's formula (csrc math/pairwise_distance.h) in PyTorch ops, so that
    autograd can differentiate it again (create_graph=True). Memory: the [N, M] weights, as
    the incoming gradient. ``out`` is the op's saved output: its derivative is the op's own
    backward, so third and higher derivatives follow too."""
    if squared:
        w = torch.where(out > 0, 2 * grad, torch.zeros_like(grad))
    else:
        # The clamp, detected as the kernel does: the output equals the stored sqrt(eps).
        # sqrt in the kernel's accumulation type, rounded to the output's dtype.
        acc = torch.float64 if out.dtype == torch.float64 else torch.float32
        clamped = torch.tensor(eps, dtype=acc).sqrt().to(out.dtype).item()
        active = out > clamped
        w = torch.where(active, grad / torch.where(active, out, torch.ones_like(out)), torch.zeros_like(grad))
    other = x if y is None else y
    grad_x = grad_y = None
    if needs_x:
        grad_x = x * w.sum(1, keepdim=True) - w @ other
        if y is None:
            grad_x = grad_x + x * w.sum(0).unsqueeze(1) - w.t() @ x
    if y is not None and needs_y:
        grad_y = y * w.sum(0).unsqueeze(1) - w.t() @ x
    return grad_x, grad_y


def _backward(ctx, grad):
    x, y, out = ctx.saved_tensors
    needs_x, needs_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (needs_x or needs_y):
        return None, None, None, None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (grad, x, y)):
        grad_x, grad_y = _differentiable_backward(grad, x, y, out, ctx.squared, ctx.eps, needs_x, needs_y)
        return grad_x, grad_y, None, None
    grad_x, grad_y = torch.ops.diva_ext._pairwise_distance_backward(
        grad, x, y, out, ctx.squared, ctx.eps, needs_x, needs_y
    )
    return (grad_x if needs_x else None), (grad_y if needs_y else None), None, None


torch.library.register_autograd(
    "diva_ext::pairwise_distance", _backward, setup_context=_setup_context
)
