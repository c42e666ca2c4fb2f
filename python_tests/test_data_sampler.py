"""ClassBalancedBatchSampler: batch composition, small classes, reproducibility, sharding."""

from collections import Counter

import numpy as np
import pytest
import torch

from diva_ext.data import load
from diva_ext.data.sampler import ClassBalancedBatchSampler

# 9 classes with 1..9 images each, ids not contiguous (labels can be any ints).
LABELS = np.repeat(np.arange(9) * 10 + 3, np.arange(1, 10))


def _check_batch(batch, labels, batch_size, per_class):
    assert len(batch) == batch_size and all(0 <= i < len(labels) for i in batch)
    counts = Counter(labels[batch].tolist())
    assert len(counts) == batch_size // per_class and set(counts.values()) == {per_class}
    # Each class's indices come together.
    runs = [labels[batch[i]] for i in range(0, batch_size, per_class)]
    assert [labels[i] for i in batch] == [c for c in runs for _ in range(per_class)]


@pytest.mark.parametrize("batch_size, per_class", [(6, 2), (9, 3), (4, 1), (8, 4)])
def test_batch_composition(batch_size, per_class):
    sampler = ClassBalancedBatchSampler(LABELS, batch_size, per_class, num_batches=50, generator=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50
    for batch in batches:
        _check_batch(batch, LABELS, batch_size, per_class)


def test_classes_with_enough_images_are_not_repeated_and_small_ones_are_filled():
    sampler = ClassBalancedBatchSampler(LABELS, 12, 3, num_batches=200, generator=1)
    for batch in sampler:
        for c in set(LABELS[batch].tolist()):
            picked = [i for i in batch if LABELS[i] == c]
            available = int((LABELS == c).sum())
            # Distinct images while there are enough, else every image plus repeats.
            assert len(set(picked)) == min(3, available)


def test_one_image_class_appears_samples_per_class_times():
    labels = np.array([0, 1, 1, 1])
    batch = next(iter(ClassBalancedBatchSampler(labels, 4, 2, generator=0)))
    assert sorted(batch) == [0, 0] + sorted(i for i in batch if i != 0) and len(set(batch) - {0}) == 2


def test_classes_and_images_are_covered_uniformly():
    labels = np.repeat(np.arange(20), 5)
    sampler = ClassBalancedBatchSampler(labels, 10, 2, num_batches=2000, generator=3)
    counts = np.bincount(np.concatenate(list(sampler)), minlength=100)
    # Each image is drawn with probability 5/20 * 2/5 = 0.1 per batch: 200 +- 13.4 per image.
    assert counts.min() > 200 - 5 * 13.4 and counts.max() < 200 + 5 * 13.4


def test_int_seed_reproducible_epochs_differ_and_set_epoch_replays():
    a = ClassBalancedBatchSampler(LABELS, 6, 2, generator=7)
    b = ClassBalancedBatchSampler(LABELS, 6, 2, generator=7)
    first, second = list(a), list(a)
    assert first == list(b) and second == list(b)
    assert first != second
    a.set_epoch(0)
    assert list(a) == first


def test_torch_generator_and_global_seed():
    def run(generator):
        return list(ClassBalancedBatchSampler(LABELS, 6, 2, generator=generator))

    assert run(torch.Generator().manual_seed(5)) == run(torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    once = run(None)
    torch.manual_seed(11)
    assert run(None) == once


def test_replicas_take_disjoint_classes_of_the_same_global_batches():
    labels = np.repeat(np.arange(12), 4)
    shards = [list(ClassBalancedBatchSampler(labels, 4, 2, generator=2, num_replicas=3, rank=r)) for r in range(3)]
    assert len(shards[0]) == 48 // 12 and all(len(s) == len(shards[0]) for s in shards)
    for step in zip(*shards):
        classes = [set(labels[b].tolist()) for b in step]
        assert all(len(c) == 2 for c in classes)
        assert not (classes[0] & classes[1] or classes[0] & classes[2] or classes[1] & classes[2])


def test_default_length_and_dataloader():
    ds = load("synthetic", num_classes=6, images_per_class=5, image_size=16)
    sampler = ClassBalancedBatchSampler(ds.labels, 8, 2, generator=0)
    assert len(sampler) == 30 // 8
    images, labels, indices = next(iter(torch.utils.data.DataLoader(ds, batch_sampler=sampler)))
    assert images.shape == (8, 3, 16, 16)
    assert torch.equal(labels, ds.labels[indices])


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((LABELS, 7, 2), {}, ValueError, r"batch_size \(7\) must be a multiple of samples_per_class \(2\)"),
        # Fewer classes than a batch needs are drawn with replacement (test_small_datasets.py); one is too few.
        ((np.full(9, 3), 20, 2), {}, ValueError, "10 classes per batch, but labels has only 1 class"),
        ((np.full(9, 3), 2, 2), {"num_replicas": 2}, ValueError, "1 classes per batch x 2 replicas, but labels has only 1"),
        ((LABELS, 6, 2), {"num_replicas": 2, "rank": 2}, ValueError, "rank must be in"),
        ((LABELS, 0, 2), {}, ValueError, "batch_size must be a positive int"),
        ((LABELS, 6, 0), {}, ValueError, "samples_per_class must be a positive int"),
        ((LABELS, 6, 2), {"num_batches": 0}, ValueError, "num_batches"),
        ((LABELS, 6, 2), {"generator": 1.5}, TypeError, "generator must be"),
        ((LABELS.astype(float), 6, 2), {}, ValueError, "labels must be a non-empty 1-D sequence of ints"),
        (([], 6, 2), {}, ValueError, "labels must be a non-empty"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ClassBalancedBatchSampler(*args, **kwargs)
