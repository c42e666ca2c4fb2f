"""Losses of the DiVA objective (docs/design.md §2.4)."""

from diva_ext.losses.contrastive import DaNCELoss, InfoNCELoss  # noqa: F401
from diva_ext.losses.margin import MarginLoss  # noqa: F401
