"""Validation classes carved out of a training split: ``split_validation_classes`` returns the
split restricted to the classes that remain for training and a copy restricted to the held-out
ones (with its own transform), each relabelled 0..C-1. Settings are chosen on the held-out
classes, never on the test classes (the paper's zero-shot protocol has no validation split of
its own).

A split with fewer than ``MIN_CLASSES_TO_HOLD_OUT`` classes (a small folder dataset) has no share
to spare: none is held out, with a warning, so that it still trains (the best epoch is then
chosen on the test split, and metrics.json's ``best_by`` says so)."""

import copy
import warnings
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset


# 2 to validate on (recall needs two classes) and 2 left to train on (a batch needs two).
MIN_CLASSES_TO_HOLD_OUT = 4


class ClassSubset(Dataset):
    """The items of ``dataset`` whose label is in ``classes``, relabelled by their position there.

    Items are ``(image, label, index)`` with ``index`` into this subset; ``labels``,
    ``class_names`` and ``num_classes`` are those of the subset (what the sampler, the
    evaluation and the run's fingerprint read)."""

    def __init__(self, dataset, classes: Sequence[int]):
        self.dataset = dataset
        self.classes = [int(c) for c in classes]
        labels = torch.as_tensor(dataset.labels)
        relabel = torch.full((int(labels.max()) + 1 if labels.numel() else 0,), -1, dtype=torch.int64)
        relabel[torch.as_tensor(self.classes, dtype=torch.int64)] = torch.arange(len(self.classes))
        self.indices = torch.nonzero(relabel[labels] >= 0).flatten()
        self.labels = relabel[labels[self.indices]]
        self.class_names = [dataset.class_names[c] for c in self.classes]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return int(self.indices.numel())

    # The wrapped dataset's: setting it on the subset must not be a silent no-op.
    transform = property(lambda self: self.dataset.transform,
                         lambda self, value: setattr(self.dataset, "transform", value))

    def __getitem__(self, index: int):
        image, _, _ = self.dataset[int(self.indices[index])]
        return image, int(self.labels[index]), index

    def __repr__(self) -> str:
        return f"ClassSubset({self.num_classes} classes, {len(self)} images of {self.dataset!r})"


def validation_class_count(num_classes: int, fraction: float) -> int:
    """How many of ``num_classes`` training classes ``fraction`` holds out (0 for 0, else at
    least 2, the fewest retrieval can be measured on, and leaving at least 2 to train on)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val-fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return 0
    count = max(2, int(round(fraction * num_classes)))
    if num_classes - count < 2:
        raise ValueError(f"val-fraction {fraction} of {num_classes} training classes leaves "
                         f"{num_classes - count} to train on; at least 2 are needed (lower val-fraction)")
    return count


def split_validation_classes(dataset, fraction: float, seed: int, eval_transform: Optional[Callable]
                             ) -> Tuple[Dataset, Optional[Dataset]]:
    """(training part, validation part or None): ``fraction`` of ``dataset``'s classes, drawn by
    ``seed``, held out; the validation part reads the same images through ``eval_transform``.
    Fewer than MIN_CLASSES_TO_HOLD_OUT classes: none held out, with a warning."""
    if fraction > 0 and dataset.num_classes < MIN_CLASSES_TO_HOLD_OUT:
        warnings.warn(f"val-fraction {fraction}: only {dataset.num_classes} training classes, and holding validation "
                      f"classes out needs at least {MIN_CLASSES_TO_HOLD_OUT} (2 to validate on, 2 to train on): "
                      "none held out, the best epoch is chosen on the test split", UserWarning)
        return dataset, None
    count = validation_class_count(dataset.num_classes, fraction)
    if count == 0:
        return dataset, None
    order = np.random.default_rng([seed, 11]).permutation(dataset.num_classes)
    held_out, kept = sorted(order[:count].tolist()), sorted(order[count:].tolist())
    evaluated = copy.copy(dataset)  # shallow: the images are shared, only the transform differs
    evaluated.transform = eval_transform
    return ClassSubset(dataset, kept), ClassSubset(evaluated, held_out)
