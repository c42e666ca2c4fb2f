"""DiVAModel: a shared backbone and one linear, L2-normalised embedding head per task."""

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from diva_ext.models.backbones import build_backbone

# The four DiVA tasks, in the paper's order. `discriminative` alone is the margin baseline.
TASKS = ("discriminative", "selfsimilarity", "shared", "intra")


class DiVAModel(nn.Module):
    """Backbone + heads.

    Args:
        tasks: which heads to build (a subset of TASKS, at least one).
        backbone: ``resnet50`` (paper) or ``small`` (CPU-sized CNN).
        embed_dim: dimension of every head (128 in DiVA).
        weights: local torchvision state dict for the resnet50 backbone (random init without).
        frozen_bn: BatchNorm statistics frozen (None: for resnet50 only, as in DiVA).

    ``forward(images [B, 3, H, W]) -> {task: [B, embed_dim] unit rows}``; with
    ``return_features=True`` it returns ``(features [B, F], heads)``, the backbone's output the
    heads share (the trainer measures each task's gradient there).
    """

    def __init__(self, tasks: Sequence[str] = TASKS, backbone: str = "resnet50", embed_dim: int = 128,
                 weights: Optional[Path] = None, frozen_bn: Optional[bool] = None):
        super().__init__()
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct names from {', '.join(TASKS)}, got {list(tasks)}")
        self.tasks = tasks
        self.backbone_name = backbone
        self.backbone, feature_dim = build_backbone(backbone, weights, frozen_bn)
        self.heads = nn.ModuleDict({t: nn.Linear(feature_dim, embed_dim) for t in tasks})
        self.embed_dim = embed_dim

    def forward(self, images: torch.Tensor, return_features: bool = False):
        features = self.backbone(images)
        heads = {t: nn.functional.normalize(head(features), dim=-1) for t, head in self.heads.items()}
        return (features, heads) if return_features else heads
