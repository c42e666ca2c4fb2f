"""The margin loss of Wu et al. 2017 with a learned, class-specific boundary beta (DESIGN §2.4)."""

from typing import Optional, Sequence

import torch
from torch import nn


class MarginLoss(nn.Module):
    """``l = [d_ap - beta + margin]_+ + [beta - d_an + margin]_+`` over triplets (a, p, n).

    ``d = sqrt(|x_a - x_b|^2 + 1e-8)``; ``beta`` is a parameter, one per class indexed by the
    anchor's label (``class_specific_beta``) or one shared. The loss is the sum of the terms over
    the number of non-zero terms (0 when there is none), plus ``nu * sum(beta of each triplet)``.

    Args:
        num_classes: number of labels (labels must lie in [0, num_classes)).
        margin, beta_init, class_specific_beta, nu: as above.

    Call: ``loss(embeddings, labels, indices_tuple, ref_emb=None, ref_labels=None)`` with
    ``embeddings`` [B, D], ``labels`` [B] and ``indices_tuple`` = (a, p, n), int64 tensors from any
    miner following pytorch-metric-learning's convention (a indexes embeddings; p and n index
    ``ref_emb``, the embeddings themselves when None). Returns a scalar tensor.
    """

    def __init__(self, num_classes: int, margin: float = 0.2, beta_init: float = 1.2,
                 class_specific_beta: bool = True, nu: float = 0.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.margin, self.nu = int(num_classes), float(margin), float(nu)
        self.class_specific_beta = bool(class_specific_beta)
        self.beta = nn.Parameter(torch.full((num_classes if class_specific_beta else 1,), float(beta_init)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: Sequence[torch.Tensor],
                ref_emb: Optional[torch.Tensor] = None, ref_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        a, p, n = _triplets(indices_tuple, embeddings.device)
        ref = embeddings if ref_emb is None else ref_emb
        if self.class_specific_beta:
            anchor_labels = labels.to(embeddings.device)[a]
            if anchor_labels.numel() and (anchor_labels.min() < 0 or anchor_labels.max() >= self.num_classes):
                raise ValueError(f"labels of anchors must lie in [0, num_classes = {self.num_classes}), got values "
                                 f"in [{int(anchor_labels.min())}, {int(anchor_labels.max())}]")
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
    out = []
    for name, t in zip("apn", indices_tuple):
        t = torch.as_tensor(t, device=device)
        if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"indices_tuple's {name} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
        out.append(t.long())
    if not out[0].shape == out[1].shape == out[2].shape:
        raise ValueError(f"indices_tuple's a, p, n must have one length, got {[tuple(t.shape) for t in out]}")
    return out
