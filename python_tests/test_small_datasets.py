"""Small datasets train: with fewer classes than a batch needs, the sampler draws classes with
replacement (as DiVA's reference code does) and warns, instead of stopping with an error."""

import warnings
from collections import Counter

import numpy as np
import pytest

import trees
from cli_helpers import DATA_OPTIONS, TINY, run_cli
from diva_ext.data.sampler import ClassBalancedBatchSampler

TINY_FLAGS = TINY[:-(1 + len(DATA_OPTIONS))]


def _sampler(labels, batch_size, per_class, **kwargs):
    with pytest.warns(UserWarning, match="drawn with replacement"):
        return ClassBalancedBatchSampler(labels, batch_size, per_class, **kwargs)


@pytest.mark.parametrize("classes,per_image_counts,batch_size,per_class", [
    (3, 5, 8, 2),    # 4 slots, 3 classes: one class fills two slots
    (2, 7, 12, 3),   # 4 slots, 2 classes: two slots each
    (5, 1, 24, 2),   # 12 slots, 5 one-image classes
    (3, 9, 21, 3),   # 7 slots, 3 classes: 2 or 3 slots each
])
def test_few_classes_fill_every_slot_evenly(classes, per_image_counts, batch_size, per_class, generator):
    labels = np.repeat(np.arange(classes) * 7 + 1, per_image_counts)
    seed = int(generator.initial_seed())
    sampler = _sampler(labels, batch_size, per_class, num_batches=200, generator=seed)
    slots = batch_size // per_class
    for batch in sampler:
        assert len(batch) == batch_size
        counts = Counter(labels[batch].tolist())
        assert set(counts) == set(labels.tolist())  # every class, since slots >= classes
        assert {n // per_class for n in counts.values()} <= {slots // classes, -(-slots // classes)}
        assert all(n % per_class == 0 for n in counts.values())
        # A class's images are distinct while it has enough, and come together in the batch.
        for c, n in counts.items():
            picked = [i for i in batch if labels[i] == c]
            assert len(set(picked)) == min(n, int((labels == c).sum()))
        runs = [labels[i] for i in batch]
        assert runs == sorted(runs, key=runs.index)


def test_replicas_share_the_global_draw(generator):
    labels = np.repeat(np.arange(3), 6)
    seed = int(generator.initial_seed())
    ranks = [_sampler(labels, 4, 2, num_batches=50, generator=seed, num_replicas=2, rank=r) for r in (0, 1)]
    for step in zip(*ranks):
        assert all(len(b) == 4 for b in step)
        counts = Counter(labels[step[0] + step[1]].tolist())
        assert set(counts) == {0, 1, 2} and sorted(counts.values()) == [2, 2, 4]


def test_enough_classes_draw_distinct_classes_without_a_warning():
    labels = np.repeat(np.arange(4), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = ClassBalancedBatchSampler(labels, 8, 2, num_batches=20, generator=0)
    for batch in sampler:
        assert sorted(Counter(labels[batch].tolist()).values()) == [2, 2, 2, 2]


def test_one_class_is_still_an_error():
    with pytest.raises(ValueError, match="only 1 class: batches need at least 2 classes"):
        ClassBalancedBatchSampler(np.zeros(10, dtype=np.int64), 8, 2)


def test_folder_with_fewer_classes_than_a_batch_trains(tmp_path, capsys):
    root = trees.folder(tmp_path / "data", classes_per_split=3, per_class=4)  # batch 8 / 2 = 4 classes needed
    with pytest.warns(UserWarning, match="only 3 classes: classes are drawn with replacement"):
        result = run_cli(capsys, "train", *TINY_FLAGS, "--dataset", "folder", "--data-root", root,
                         "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "final metrics" in result.stdout and (tmp_path / "run" / "checkpoint.pt").is_file()
