"""The synthetic data's class design (generator version 2, train_part "varies"): train classes
vary the part per image, test and pretraining classes fix it, class factors are disjoint where
they must be, and the nuisance is drawn alike for every split."""

import numpy as np
import pytest
import torch
from scipy import stats

from diva_ext.data import load
from diva_ext.data.synthetic import (ANY_PART, MAX_CLASSES_PER_SPLIT, PARTS, TRIPLES, _sample_scenes,
                                     pretrain_class_count, split_classes)


@pytest.fixture
def seed(generator):
    return int(torch.randint(2**31, (), generator=generator))


def test_train_classes_vary_the_part_the_others_fix_it(seed):
    num = 1 + seed % MAX_CLASSES_PER_SPLIT["varies"]
    train, test, pre = (split_classes(num, s, seed) for s in ("train", "test", "pretrain"))
    assert all(c[3] == ANY_PART for c in train)
    assert all(0 <= c[3] < len(PARTS) for c in test + pre)
    # No test or pretraining class lies inside a train class's images (its triple is not a train one).
    train_triples = {c[:3] for c in train}
    assert len(train_triples) == num
    assert not train_triples & {c[:3] for c in test + pre}
    assert len(set(test)) == num and not set(test) & set(pre)
    assert len(pre) == pretrain_class_count(num) == len(TRIPLES) // 2 * len(PARTS) - num


def test_splits_do_not_depend_on_each_others_size(seed):
    assert split_classes(5, "test", seed) == split_classes(128, "test", seed)[-5:]
    assert split_classes(5, "train", seed) == split_classes(128, "train", seed)[:5]


def test_the_part_is_drawn_uniformly_per_train_image(seed):
    classes = split_classes(100, "train", seed)
    scenes, labels = _sample_scenes(classes, 60, 16, np.random.default_rng(seed))
    counts = np.stack([np.bincount(scenes.part[labels == k], minlength=len(PARTS)) for k in range(len(classes))])
    assert (counts > 0).all(), "a train class misses a part"
    # Pooled over 6000 images, uniform at the 1e-4 level (fails for a part drawn once per class).
    assert stats.chisquare(counts.sum(0)).pvalue > 1e-4
    # Drawn independently of the class: no class-part association beyond chance.
    assert stats.chi2_contingency(counts).pvalue > 1e-4


def test_test_classes_keep_their_part():
    classes = split_classes(100, "test", 0)
    scenes, labels = _sample_scenes(classes, 5, 16, np.random.default_rng(1))
    assert np.array_equal(scenes.part, np.asarray([c[3] for c in classes])[labels])


def test_default_test_split_has_classes_that_differ_only_in_the_part():
    test = split_classes(100, "test", 0)
    triples = [c[:3] for c in test]
    siblings = sum(triples.count(t) > 1 for t in triples)
    # The design's point: about 4 in 10 test classes need the part to be told apart.
    assert 20 <= siblings <= 60, siblings


@pytest.mark.parametrize("name, low, high", [("scale", 0.3, 0.45), ("angle", 0, 2 * np.pi)])
def test_nuisance_is_drawn_alike_in_every_split(name, low, high, seed):
    drawn = {}
    for split in ("train", "test", "pretrain"):
        scenes, _ = _sample_scenes(split_classes(20, split, seed)[:20], 50, 16, np.random.default_rng([seed, 3]))
        drawn[split] = getattr(scenes, name)
        assert low <= drawn[split].min() and drawn[split].max() <= high
    # Same uniform law in every split (Kolmogorov-Smirnov against it, 1000 draws each).
    for values in drawn.values():
        assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 1e-4


def test_train_class_names_say_the_part_varies():
    ds = load("synthetic", split="train", num_classes=3, images_per_class=2, image_size=16)
    assert all(name.endswith("+ any") for name in ds.class_names)
    assert all(f["part"] == "any" for f in ds.class_factors)


def test_fixed_design_fixes_every_part():
    ds = load("synthetic", split="train", num_classes=3, images_per_class=2, image_size=16, train_part="fixed")
    assert all(f["part"] in PARTS for f in ds.class_factors)


def test_pretraining_key_names_the_generator():
    from diva_ext.data.synthetic import GENERATOR_VERSION
    from diva_ext.training.pretrain import PretrainConfig

    config = PretrainConfig()
    assert config.generator == GENERATOR_VERSION
    with pytest.raises(ValueError, match="generator"):
        PretrainConfig(generator=GENERATOR_VERSION - 1).validate()
    assert PretrainConfig(train_part="fixed").key() != config.key()
