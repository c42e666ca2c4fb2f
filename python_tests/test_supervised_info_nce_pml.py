"""supervised_info_nce against a peer library: pytorch-metric-learning's SupConLoss wrapped in
CrossBatchMemory, with the queries not enqueued (enqueue_mask all False: every query against the
K memory rows, no self-pairs), computes the same per-row loss; its AvgNonZeroReducer averages
the rows with a nonzero loss, i.e. those with positives. Both in float64; the module is skipped,
naming the package, where PML is not installed (conftest.py).

PML normalises the embeddings itself (CosineSimilarity), so its gradient is ours projected onto
the tangent space of the unit sphere at q: g - (g . q) q.
"""

import torch
from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss

from diva_ext import ops

from supervised_info_nce_cases import gradient_bounds, labelled_inputs, rows_error_bound
from tolerances import accumulation, assert_within, unit_roundoff

T = 0.1


def pml_loss(q, labels, memory, memory_labels):
    loss_fn = CrossBatchMemory(SupConLoss(temperature=T), memory.shape[1], memory_size=memory.shape[0])
    loss_fn.embedding_memory = memory.clone()
    loss_fn.label_memory = memory_labels.clone()
    loss_fn.queue_idx, loss_fn.has_been_filled = 0, True
    return loss_fn(q, labels, enqueue_mask=torch.zeros(q.shape[0], dtype=torch.bool))


def test_equals_pml_supcon_with_cross_batch_memory(generator):
    b, k, d = 37, 300, 24
    q, labels, memory, memory_labels = labelled_inputs(b, k, d, generator, torch.float64, classes=6)
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    loss, _, positives = ops.supervised_info_nce(qa, labels, memory, memory_labels, temperature=T,
                                                 return_positives=True)
    has = positives > 0
    assert has.any() and not has.all()  # rows without positives are left out of the mean
    ours = loss[has].mean()
    theirs = pml_loss(qb, labels, memory, memory_labels)
    (g_ours,) = torch.autograd.grad(ours, (qa,))
    (g_theirs,) = torch.autograd.grad(theirs, (qb,))
    # Values: each row within the float64 model (doubled: PML's float64 obeys the same model),
    # then the mean of n rows.
    rows = rows_error_bound(q, labels, memory, memory_labels, torch.float64, temperature=T)[0][has]
    n = int(has.sum())
    u = unit_roundoff(torch.float64)
    bound = 2 * rows.sum() / n + (accumulation(n, torch.float64) + 2 * u) * loss[has].abs().sum().detach() / n
    assert_within(theirs.detach(), ours.detach(), bound, "mean loss")
    # Gradients: ours projected to the sphere's tangent space, against PML's.
    w = has.double() / n
    bq, _ = gradient_bounds(q, labels, memory, memory_labels, w, 0 * w, torch.float64, temperature=T)
    tangent = g_ours - (g_ours * q).sum(1, keepdim=True) * q
    slack = 2 * bq + bq.sum(1, keepdim=True) * q.abs() + 8 * u * g_ours.abs().sum(1, keepdim=True)
    assert_within(g_theirs, tangent, slack, "grad q (tangent)")
