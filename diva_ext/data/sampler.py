"""Class-balanced batches: every batch holds ``batch_size / samples_per_class`` classes (distinct
while the labels have enough) with ``samples_per_class`` images each, as margin losses and their
miners need."""

import warnings
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Sampler


class ClassBalancedBatchSampler(Sampler[List[int]]):
    """A batch sampler (``DataLoader(dataset, batch_sampler=...)``) of class-balanced batches.

    Each batch draws ``batch_size // samples_per_class`` distinct classes uniformly at random, then
    ``samples_per_class`` distinct images of each class. A class with fewer images than that
    contributes all of them plus repeats drawn from them at random (so a one-image class appears
    ``samples_per_class`` times; with augmentation the copies still differ). Batches list each
    class's indices together.

    Fewer classes than a batch needs (a small dataset): classes are drawn with replacement, as in
    DiVA's reference sampler, with a warning; the batch keeps its size. The slots are filled
    from random permutations of all classes laid end to end, so each class fills
    floor(k / C) or ceil(k / C) of the k slots, and a class in several slots gets that many
    times ``samples_per_class`` images (distinct while it has enough). Needs at least 2 classes
    when a batch has 2 or more slots.

    Randomness: ``generator`` may be an int seed (epoch ``e`` uses the seed and ``e``, so runs are
    reproducible and each epoch differs; ``set_epoch`` sets the next epoch, e.g. when resuming), a
    ``torch.Generator`` (one draw from it seeds each epoch), or ``None`` (one draw from torch's
    global generator per epoch, so ``torch.manual_seed`` reproduces it).

    Distributed: with ``num_replicas`` > 1 every replica draws the same global batches of
    ``num_replicas * classes per batch`` distinct classes (give all replicas the same seed) and
    ``rank`` takes its own slice of classes, so replicas never share a class within a step
    (unless classes are drawn with replacement, above).

    Args:
        labels: [N] int class of every item (tensor, array or sequence), e.g. ``dataset.labels``.
        batch_size: items per batch (per replica), a multiple of ``samples_per_class``.
        samples_per_class: images per class in a batch (default 2, as in DiVA).
        num_batches: batches per epoch; default ``N // (batch_size * num_replicas)`` (at least 1).
        generator: int seed, ``torch.Generator`` or ``None``, see above.
        num_replicas, rank: distributed sharding, see above.
    """

    def __init__(
        self,
        labels: Union[torch.Tensor, np.ndarray, Sequence[int]],
        batch_size: int,
        samples_per_class: int = 2,
        *,
        num_batches: Optional[int] = None,
        generator: Union[int, torch.Generator, None] = None,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be a non-empty 1-D sequence of ints, got shape {labels.shape} "
                             f"dtype {labels.dtype}")
        for name, value in (("batch_size", batch_size), ("samples_per_class", samples_per_class),
                            ("num_replicas", num_replicas)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if batch_size % samples_per_class:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of samples_per_class ({samples_per_class})")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas) = [0, {num_replicas}), got {rank}")
        if not isinstance(generator, (int, torch.Generator, type(None))) or isinstance(generator, bool):
            raise TypeError(f"generator must be an int seed, a torch.Generator or None, got {type(generator).__name__}")
        classes, inverse = np.unique(labels, return_inverse=True)
        self.classes_per_batch = batch_size // samples_per_class
        slots = self.classes_per_batch * num_replicas
        needed = (f"batch_size {batch_size} / samples_per_class {samples_per_class} = {self.classes_per_batch} "
                  f"classes per batch{f' x {num_replicas} replicas' if num_replicas > 1 else ''}")
        if slots > 1 and classes.size < 2:
            raise ValueError(f"{needed}, but labels has only 1 class: batches need at least 2 classes")
        self.with_replacement = slots > classes.size
        if self.with_replacement:
            warnings.warn(f"{needed}, but labels has only {classes.size} classes: classes are drawn with "
                          "replacement, so a class can fill several slots of a batch", stacklevel=2)
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.num_replicas, self.rank = num_replicas, rank
        if num_batches is None:
            num_batches = max(1, labels.size // (batch_size * num_replicas))
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
        self.num_batches = num_batches
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (matters with an int seed)."""
        self.epoch = epoch

    def _epoch_rng(self) -> np.random.Generator:
        if isinstance(self.generator, int):
            return np.random.default_rng([self.generator, self.epoch])
        seed = torch.randint(0, 2**62, (), generator=self.generator).item()
        return np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        rng = self._epoch_rng()
        self.epoch += 1
        mine = slice(self.rank * self.classes_per_batch, (self.rank + 1) * self.classes_per_batch)
        slots = self.classes_per_batch * self.num_replicas
        for _ in range(self.num_batches):
            # Every replica draws the global batch (same stream) and keeps its own classes.
            if self.with_replacement:
                yield self._batch_with_repeats(rng, slots, mine)
                continue
            chosen = rng.choice(len(self._members), slots, replace=False)
            picks = [self._pick(self._members[c], rng) for c in chosen]
            yield np.concatenate(picks[mine]).tolist()

    def _batch_with_repeats(self, rng: np.random.Generator, slots: int, mine: slice) -> List[int]:
        classes = len(self._members)
        laps = -(-slots // classes)
        chosen = np.concatenate([rng.permutation(classes) for _ in range(laps)])[:slots]
        k = self.samples_per_class
        picks: List[np.ndarray] = [np.empty(0, dtype=np.int64)] * slots
        for c in np.unique(chosen):  # a class in m slots: m * k images drawn together, split by slot
            where = np.flatnonzero(chosen == c)
            images = self._pick(self._members[c], rng, k * where.size)
            for j, slot in enumerate(where):
                picks[slot] = images[j * k:(j + 1) * k]
        order = np.arange(slots)[mine]
        # This replica's slots, a class's slots next to each other (its indices come together).
        first = {c: i for i, c in reversed(list(enumerate(chosen[order])))}
        order = sorted(order, key=lambda slot: first[chosen[slot]])
        return np.concatenate([picks[slot] for slot in order]).tolist()

    def _pick(self, members: np.ndarray, rng: np.random.Generator, k: Optional[int] = None) -> np.ndarray:
        k = self.samples_per_class if k is None else k
        if members.size >= k:
            return rng.choice(members, k, replace=False)
        return np.concatenate([members, rng.choice(members, k - members.size, replace=True)])
