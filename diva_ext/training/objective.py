"""DiVA's objective as the paper writes it (Milbich et al., ECCV 2020, eq. 6; docs/design.md §3):

    L = L_disc + a_ssl * L_DaNCE + a_shared * L_shared + a_intra * L_intra + L_decorr

    L_disc   = margin(disc,    distance-weighted triplets on the class labels)
    L_DaNCE  = DaNCE(selfsim,  momentum keys of a second view, memory queue of past keys)
    L_shared = margin(shared,  distance-weighted triplets on permuted labels)
    L_intra  = margin(intra,   triplets inside one class)
    L_decorr = rho * adversarial separation of (selfsim, shared, intra) from disc

``diva_objective`` returns the named terms, unweighted; ``weighted_total`` adds them with the
task weights (rho is inside the decorrelation term). How the terms are optimised (mixed
precision, gradient scaling, gathering over processes, the non-finite guard) is the trainer's.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import nn

# The term that carries its own weight (rho) and so is added as it is.
DECORRELATION = "decorrelation"


@dataclass
class ObjectiveParts:
    """The modules the objective is made of. ``margins`` and ``miners``: one per margin task
    present (discriminative, shared, intra); ``dance``: DaNCELoss when the self-similarity task
    is trained; ``decorrelation``: AdversarialSeparation when decorrelation is on."""

    margins: Mapping[str, nn.Module] = field(default_factory=dict)
    miners: Mapping[str, Callable] = field(default_factory=dict)
    dance: Optional[nn.Module] = None
    decorrelation: Optional[nn.Module] = None


def diva_objective(heads: Mapping[str, torch.Tensor], labels: torch.Tensor, keys: Optional[torch.Tensor],
                   negatives: Optional[torch.Tensor], parts: ObjectiveParts) -> Dict[str, torch.Tensor]:
    """The terms of DiVA's loss on one batch, by name (scalars, unweighted).

    Args:
        heads: task -> [B, D] unit rows of the batch (the queries).
        labels: [B] class labels.
        keys: [B, D] momentum-encoder keys of the second view (self-similarity only, else None).
        negatives: [K, D] the memory queue's keys (self-similarity only, else None).
        parts: the losses and miners.
    """
    terms: Dict[str, torch.Tensor] = {}
    for task, margin in parts.margins.items():
        triplets = parts.miners[task](heads[task], labels)
        terms[task] = margin(heads[task], labels, triplets)
    if parts.dance is not None:
        terms["selfsimilarity"] = parts.dance(heads["selfsimilarity"], keys, negatives)
    if parts.decorrelation is not None:
        terms[DECORRELATION] = parts.decorrelation(heads)
    return terms


def term_weight(name: str, task_weight: Callable[[str], float]) -> float:
    """The weight of term ``name`` in L (1 for the decorrelation term, whose rho is inside it)."""
    return 1.0 if name == DECORRELATION else float(task_weight(name))


def weighted_total(terms: Mapping[str, torch.Tensor], task_weight: Callable[[str], float]) -> torch.Tensor:
    """L: the terms added with their task weights (``task_weight(task)``, e.g. TrainConfig.task_weight)."""
    return sum(term_weight(name, task_weight) * term for name, term in terms.items())
