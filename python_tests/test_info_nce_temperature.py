"""info_nce in float32 keeps the reference's accuracy at every temperature: loss, lse and the
gradients of q, k and the queue, on the CPU kernels and on the CUDA kernels (through the CUDA
emulation), on each backward path (saved O, saved statistics only, everything recomputed).

Before the fix the gradients lost accuracy as T fell (weighting "none", float32: relative error
of q's gradient ~7e-5 at T = 1e-4 against the float32 reference's ~3e-7): the softmax weights
p_ij = exp(l_ij - lse_i) were formed against lse_i rounded to float32, whose rounding
(eps |lse_i| ~ eps |s| / T) grows with 1/T, and the forward's O was scaled by exp(m_i - lse_i).

Yardstick, per output element: |ours - float64| <= 2 max |torch float32 - float64| + 2 * the
rounding sensitivity (the first-order change when every input moves by one float32 rounding:
eps * sum |d out / d x| |x|, from the float64 reference's gradient and Hessian) + one ulp of the
value (eps |value|: the result's rounding to float32 and the last operation's, which torch may
escape by luck and the sensitivity need not cover), for loss and lse the float64 oracle's own
error (info_nce_rows_error_model.float64_oracle_error: its loss = lse - a cancels where the
positive dominates), and for the gradients the evaluation's own roundings: each is a sum of terms G_ij x_j (G the gradient of
the objective with respect to the inner products, x the other side's rows), each term formed
with about 8 roundings of eps (the factor (g + h) / T, the weight, the exponential, the
products, the sum), so 8 eps sum_j |G_ij| |x_j|.
"""

import pytest
import torch
import torch.nn.functional as F

from diva_ext import reference
from diva_ext.testing import emulation

from info_nce_rows_error_model import float64_oracle_error

TEMPERATURES = [0.5, 0.07, 1e-2, 1e-3, 1e-4, 1e-5]
WEIGHTINGS = ["none", "dance"]
EPS32 = torch.finfo(torch.float32).eps
C = torch.ops.diva_ext


def inputs(generator, b=5, k=70, d=5):
    """Rows from a positive that dominates (small noise) to one far below the negatives, and a
    negative tied with one row's positive (p_pos ~ p_neg ~ 1/2)."""
    q = F.normalize(torch.randn(b, d, generator=generator, dtype=torch.float64), dim=1)
    noise = torch.logspace(-1.5, 0.5, b, dtype=torch.float64)[:, None]
    pos = F.normalize(q + noise * torch.randn(b, d, generator=generator, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(k, d, generator=generator, dtype=torch.float64), dim=1)
    queue[3] = pos[1]
    return q.float(), pos.float(), queue.float()


def objective_weights(b, generator):
    return torch.randn(b, generator=generator, dtype=torch.float64), torch.randn(b, generator=generator, dtype=torch.float64)


def reference_outputs(q, pos, queue, g, h, dtype, **kw):
    """(loss, lse, grad_q, grad_k, grad_queue) of sum(g loss + h lse) by the reference in dtype."""
    ins = [t.to(dtype).requires_grad_() for t in (q, pos, queue)]
    loss, lse = reference.info_nce(*ins, **kw)
    grads = torch.autograd.grad((g.to(dtype) * loss + h.to(dtype) * lse).sum(), ins)
    return [loss.detach(), lse.detach(), *grads]


def sensitivities(q, pos, queue, g, h, **kw):
    """eps * sum_x |d out / d x| |x| for each element of the five outputs (float64 reference)."""
    sizes = [t.numel() for t in (q, pos, queue)]
    shapes = [t.shape for t in (q, pos, queue)]
    flat = torch.cat([t.double().reshape(-1) for t in (q, pos, queue)])

    def split(v):
        return [p.reshape(s) for p, s in zip(torch.split(v, sizes), shapes)]

    def rows(v):
        loss, lse = reference.info_nce(*split(v), **kw)
        return torch.cat([loss, lse])

    def gradient(v):
        loss, lse = reference.info_nce(*split(v), **kw)
        return torch.autograd.grad((g * loss + h * lse).sum(), v, create_graph=True)[0]

    x = flat.detach().requires_grad_()
    j_rows = torch.autograd.functional.jacobian(rows, x, vectorize=True)  # [2B, n]
    j_grad = torch.autograd.functional.jacobian(gradient, x, vectorize=True)  # [n, n]: the Hessian
    s_rows = EPS32 * (j_rows.abs() @ flat.abs())
    s_grad = EPS32 * (j_grad.abs() @ flat.abs())
    b = q.shape[0]
    return [s_rows[:b], s_rows[b:], *split(s_grad)]


def evaluation_terms(q, pos, queue, g, h, **kw):
    """sum_j |G_ij| |x_j| for grad_q, grad_k and grad_queue (see the module docstring), from the
    float64 reference: G = d objective / d (inner products)."""
    q, pos, queue = q.double(), pos.double(), queue.double()
    s_pos = (q * pos).sum(1).requires_grad_()
    s_neg = (q @ queue.t()).requires_grad_()
    logits_neg = s_neg
    if kw["weighting"] == "dance":
        logits_neg = reference.dance_weights(s_neg.detach(), q.shape[1], kw["lower_cutoff"], kw["upper_cutoff"]) * s_neg
    logits = torch.cat([s_pos[:, None], logits_neg], 1) / kw["temperature"]
    lse = torch.logsumexp(logits, 1)
    objective = (g * (lse - logits[:, 0]) + h * lse).sum()
    g_pos, g_neg = (t.abs() for t in torch.autograd.grad(objective, (s_pos, s_neg)))
    return [
        g_neg @ queue.abs() + g_pos[:, None] * pos.abs(),
        g_pos[:, None] * q.abs(),
        g_neg.t() @ q.abs(),
    ]


def run_cpu(q, pos, queue, g, h, path, temperature, weighting, lower_cutoff, upper_cutoff):
    args = (temperature, weighting, lower_cutoff, upper_cutoff)
    needs_queue = path != "saved_o"
    loss, lse, stats, o = C._info_nce_forward(q, pos, queue, *args, path == "saved_o")
    stats = None if path == "recomputed" else stats
    o = o if path == "saved_o" else None
    grads = C._info_nce_backward(g.float(), h.float(), q, pos, queue, stats, o, *args, True, True, needs_queue)
    return [loss, lse, *grads[:2], grads[2] if needs_queue else None]


def run_emulated(q, pos, queue, g, h, path, temperature, weighting, lower_cutoff, upper_cutoff):
    e = emulation.load()
    args = (temperature, weighting, lower_cutoff, upper_cutoff)
    seed = emulation.base_seed()
    needs_queue = path != "saved_o"
    loss, lse, stats, o = e._info_nce_forward(q, pos, queue, *args, path == "saved_o", seed)
    stats = None if path == "recomputed" else stats
    o = o if path == "saved_o" else None
    grads = e._info_nce_backward(
        g.float(), h.float(), q, pos, queue, stats, o, *args, True, True, needs_queue, seed + 1
    )
    return [loss, lse, *grads[:2], grads[2] if needs_queue else None]


BACKENDS = [
    pytest.param(run_cpu, id="cpu"),
    pytest.param(run_emulated, id="cuda-emulated", marks=pytest.mark.cuda_emulated),
]
NAMES = ["loss", "lse", "grad_q", "grad_k", "grad_queue"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_float32_accuracy_at_every_temperature(backend, weighting, temperature, generator):
    q, pos, queue = inputs(generator)
    g, h = objective_weights(q.shape[0], generator)
    kw = dict(temperature=temperature, weighting=weighting, lower_cutoff=0.5, upper_cutoff=1.4)
    want = reference_outputs(q, pos, queue, g, h, torch.float64, **kw)
    torch32 = reference_outputs(q, pos, queue, g, h, torch.float32, **kw)
    sens = sensitivities(q, pos, queue, g, h, **kw)
    terms = [torch.zeros(()), torch.zeros(())] + evaluation_terms(q, pos, queue, g, h, **kw)
    oracle = list(float64_oracle_error(want[0], want[1], queue.shape[0])) + [torch.zeros(())] * 3
    failures = []
    for path in ("saved_o", "saved_stats", "recomputed"):
        ours = backend(q, pos, queue, g, h, path, **kw)
        for name, o, t, w, s, a, r in zip(NAMES, ours, torch32, want, sens, terms, oracle):
            if o is None:
                continue
            assert o.dtype == torch.float32 and o.shape == w.shape
            err = (o.double() - w).abs()
            err_torch = (t.double() - w).abs().max()
            bound = 2 * err_torch + 2 * s + 8 * EPS32 * a + EPS32 * w.abs() + r
            if not (err <= bound).all():
                worst = (err / bound).argmax()
                failures.append(
                    f"{path} {name}: error {err.reshape(-1)[worst]:.3g} > bound {bound.reshape(-1)[worst]:.3g} "
                    f"(torch float32 {err_torch:.3g}, |value| {w.abs().max():.3g})"
                )
    assert not failures, "\n".join(failures)
