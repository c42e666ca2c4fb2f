"""DiVA's model: one backbone and four L2-normalised embedding heads."""

from diva_ext.models.backbones import BACKBONES, build_backbone, freeze_batchnorm_statistics
from diva_ext.models.diva import TASKS, DiVAModel

__all__ = ["TASKS", "DiVAModel", "BACKBONES", "build_backbone", "freeze_batchnorm_statistics"]
