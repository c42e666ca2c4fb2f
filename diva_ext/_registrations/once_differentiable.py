"""First derivatives only: a backward whose results raise a clear error if differentiated again.

torch.autograd.function.once_differentiable attaches its error node to detached copies of the
gradients, so a second ``torch.autograd.grad(..., q)`` never reaches it: it reports that q was
unused, or gives a wrong value when q also enters the objective directly. Here the node's inputs
are the tensors the gradients depend on (incoming gradients, saved inputs), so differentiating
the gradients with respect to any of them raises, with a message naming the operator.
"""

import torch


class _RefuseSecondOrder(torch.autograd.Function):
    """Returns ``grads`` (computed under no_grad) as outputs of a node whose inputs are
    ``inputs``; its backward raises ``RuntimeError(message)``."""

    @staticmethod
    def forward(ctx, message, grads, *inputs):
        ctx.message = message
        return tuple(grads)

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise RuntimeError(ctx.message)


def refuse_double_backward(op, grads, inputs, hint=""):
    """``grads`` (tensors or None, computed under no_grad) made to raise ``RuntimeError("<op>:
    second derivatives ... are not implemented ...")`` when backpropagated through.

    Call it with a backward's results when ``torch.is_grad_enabled()`` (create_graph=True);
    ``inputs`` are the tensors the gradients depend on. Returns ``grads`` unchanged when none of
    ``inputs`` requires grad (then there is nothing to differentiate them against).
    """
    connected = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    present = [i for i, g in enumerate(grads) if g is not None]
    if not connected or not present:
        return grads
    message = (
        f"{op}: second derivatives (differentiating its gradient, e.g. after "
        f"torch.autograd.grad(..., create_graph=True)) are not implemented: its backward is a "
        f"fused kernel.{(' ' + hint) if hint else ''}"
    )
    wrapped = _RefuseSecondOrder.apply(message, tuple(grads[i] for i in present), *connected)
    out = list(grads)
    for i, w in zip(present, wrapped):
        out[i] = w
    return tuple(out)
