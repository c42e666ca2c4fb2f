"""The margin loss of Wu et al. 2017 with a learned, class-specific boundary beta (docs/design.md §2.4)."""

from typing import Optional, Sequence

import torch
from torch import nn

from diva_ext import _validation as _check


class MarginLoss(nn.Module):
    """``l = [d_ap - beta + margin]_+ + [beta - d_an + margin]_+`` over triplets (a, p, n).

    ``d = sqrt(|x_a - x_b|^2 + 1e-8)``; ``beta`` is a parameter, one per class indexed by the
    anchor's label (``class_specific_beta``) or one shared. The loss is the sum of the terms over
    the number of non-zero terms (0 when there is none), plus ``nu * sum(beta of each triplet)``.

    Args:
        num_classes: number of labels, an integer >= 1 (labels must lie in [0, num_classes)).
        margin, beta_init, nu: finite and >= 0, as above.
        class_specific_beta: one beta per class (DiVA) or one for all.

    Call: ``loss(embeddings, labels, indices_tuple, ref_emb=None, ref_labels=None)`` with
    ``embeddings`` [B, D] floating, ``labels`` [B] integer (may be None without class-specific
    beta) and ``indices_tuple`` = (a, p, n), integer tensors of one length from any miner following
    pytorch-metric-learning's convention: a indexes embeddings, in [0, B); p and n index
    ``ref_emb`` [R, D] (the embeddings themselves when None), in [0, R). ``ref_labels`` [R] is
    optional and only checked. Embeddings must be finite. Each wrong argument is a ValueError
    naming it (one device synchronisation checks the values).

    Returns a scalar tensor. With no triplets (an empty batch, or a miner that found none) it is
    an exact 0 that keeps the graph: backward gives zero gradients to the embeddings and to beta,
    like every loss in diva_ext.losses (pytorch-metric-learning's zero loss).
    """

    def __init__(self, num_classes: int, margin: float = 0.2, beta_init: float = 1.2,
                 class_specific_beta: bool = True, nu: float = 0.0):
        super().__init__()
        self.num_classes = _check.integer(num_classes, "num_classes")
        self.margin = _check.real(margin, "margin", minimum=0.0)
        self.nu = _check.real(nu, "nu", minimum=0.0)
        beta_init = _check.real(beta_init, "beta_init", minimum=0.0)
        self.class_specific_beta = bool(class_specific_beta)
        self.beta = nn.Parameter(torch.full((self.num_classes if class_specific_beta else 1,), beta_init))

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor], indices_tuple: Sequence[torch.Tensor],
                ref_emb: Optional[torch.Tensor] = None, ref_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        embeddings = _check.matrix(embeddings, "embeddings")
        b = embeddings.shape[0]
        if labels is not None:
            labels = _check.label_vector(labels, "labels", b, "embeddings").to(embeddings.device)
        elif self.class_specific_beta:
            raise ValueError("labels are required: beta is class-specific (indexed by the anchors' labels)")
        if ref_emb is None:
            if ref_labels is not None:
                raise ValueError("ref_labels were given without ref_emb; pass both or neither")
            ref, ref_name = embeddings, "embeddings"
        else:
            ref, ref_name = _check.matrix(ref_emb, "ref_emb", like=embeddings, like_name="embeddings"), "ref_emb"
            if ref_labels is not None:
                _check.label_vector(ref_labels, "ref_labels", ref.shape[0], "ref_emb")
        a, p, n = _triplets(indices_tuple, embeddings.device)
        r = ref.shape[0]
        ranges = [("indices_tuple's a", a, b, f"{b} = rows of embeddings"),
                  ("indices_tuple's p", p, r, f"{r} = rows of {ref_name}"),
                  ("indices_tuple's n", n, r, f"{r} = rows of {ref_name}")]
        if self.class_specific_beta:
            # Clamped so that an out-of-range anchor is reported as such, by the check above it.
            anchor_labels = labels[a.clamp(0, b - 1)] if b else labels[:0]
            ranges.append(("labels of anchors", anchor_labels, self.num_classes, f"num_classes = {self.num_classes}"))
        finite = [("embeddings", embeddings)] + ([("ref_emb", ref)] if ref_emb is not None else [])
        _check.check_values(finite=finite, ranges=ranges)

        if self.class_specific_beta:
            beta = self.beta[anchor_labels]
        else:
            beta = self.beta.expand(a.numel())
        beta = beta.to(embeddings.dtype)
        x_a = embeddings[a]
        d_ap = ((x_a - ref[p]).square().sum(1) + 1e-8).sqrt()
        d_an = ((x_a - ref[n]).square().sum(1) + 1e-8).sqrt()
        pos = torch.relu(d_ap - beta + self.margin)
        neg = torch.relu(beta - d_an + self.margin)
        active = (pos > 0).sum() + (neg > 0).sum()
        loss = (pos.sum() + neg.sum()) / active.clamp_min(1)
        if self.nu:
            loss = loss + self.nu * beta.sum()
        return loss


def _triplets(indices_tuple, device):
    if indices_tuple is None:
        raise ValueError("MarginLoss needs indices_tuple = (a, p, n) from a triplet miner")
    if len(indices_tuple) != 3:
        raise ValueError(
            f"MarginLoss needs triplets (a, p, n), got a {len(indices_tuple)}-tuple (pairs (a1, p, a2, n) can be "
            "converted with pytorch_metric_learning.utils.loss_and_miner_utils.convert_to_triplets)")
    out = [_check.index_vector(t, f"indices_tuple's {name}", device) for name, t in zip("apn", indices_tuple)]
    if not out[0].shape == out[1].shape == out[2].shape:
        raise ValueError(f"indices_tuple's a, p, n must have one length, got {[tuple(t.shape) for t in out]}")
    return out
