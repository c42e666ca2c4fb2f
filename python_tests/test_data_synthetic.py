"""The synthetic dataset: deterministic per seed, zero-shot class split, nuisance, option checks."""

import time

import numpy as np
import pytest
import torch

from diva_ext.data import load
from diva_ext.data.synthetic import ALL_CLASSES, ANY_PART, FACTORS, MAX_CLASSES_PER_SPLIT, TRAIN_PARTS, split_classes
from diva_ext.evaluation import evaluate

SMALL = dict(num_classes=7, images_per_class=3, image_size=20)


def test_same_seed_same_data_other_seed_other_data():
    a = load("synthetic", split="test", seed=5, **SMALL)
    b = load("synthetic", split="test", seed=5, **SMALL)
    c = load("synthetic", split="test", seed=6, **SMALL)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.class_factors == b.class_factors
    assert not torch.equal(a.images, c.images)


def test_train_images_do_not_depend_on_test_options():
    a = load("synthetic", split="train", seed=1, **SMALL)
    load("synthetic", split="test", seed=1, num_classes=50, images_per_class=1)
    b = load("synthetic", split="train", seed=1, **SMALL)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("train_part", TRAIN_PARTS)
@pytest.mark.parametrize("n_train, n_test", [(100, 100), (1, None), (None, 37)])
def test_train_and_test_classes_are_disjoint(n_train, n_test, train_part):
    n_train, n_test = (MAX_CLASSES_PER_SPLIT[train_part] if n is None else n for n in (n_train, n_test))
    train = set(split_classes(n_train, "train", seed=3, train_part=train_part))
    test = set(split_classes(n_test, "test", seed=3, train_part=train_part))
    assert len(train) == n_train and len(test) == n_test
    # a train class whose part varies is not any test class: compare what the classes fix
    assert not {c[:3] if c[3] == ANY_PART else c for c in train} & {c[:3] if c[3] == ANY_PART else c for c in test}
    assert not {c[:3] for c in train if c[3] == ANY_PART} & {c[:3] for c in test}


def test_default_splits_share_every_factor_value():
    train = load("synthetic", split="train", num_classes=100, images_per_class=1)
    test = load("synthetic", split="test", num_classes=100, images_per_class=1)
    assert {tuple(f.values()) for f in train.class_factors}.isdisjoint(tuple(f.values()) for f in test.class_factors)
    for factor, values in FACTORS.items():
        for split in (train, test):
            expected = {"any"} if factor == "part" and split is train else set(values)
            assert {f[factor] for f in split.class_factors} == expected, (factor, split.split)
    assert len(ALL_CLASSES) == 8 * 8 * 4 * 3


def test_layout_labels_and_items():
    ds = load("synthetic", split="train", **SMALL)
    assert len(ds) == 21 and ds.num_classes == 7 and len(ds.class_names) == 7 == len(set(ds.class_names))
    assert ds.images.shape == (21, 3, 20, 20) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.labels, torch.arange(7).repeat_interleave(3))
    image, label, index = ds[4]
    assert image.dtype == torch.float32 and image.shape == (3, 20, 20) and 0 <= image.min() <= image.max() <= 1
    assert (label, index) == (1, 4)
    seen = []
    ds.transform = lambda img: seen.append(img) or img.shape
    assert ds[0][0] == (3, 20, 20) and seen[0].dtype == torch.uint8


def test_every_image_is_different():
    ds = load("synthetic", split="train", **SMALL)
    flat = ds.images.flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == len(ds)
    # Nuisance is substantial, not a few noisy pixels: same-class images differ a lot.
    same_class = (flat[0].float() - flat[1].float()).abs().mean()
    assert same_class > 10


def test_default_size_and_generation_time():
    start = time.perf_counter()
    ds = load("synthetic", split="test")
    elapsed = time.perf_counter() - start
    assert (len(ds), ds.num_classes, ds.images.shape[-1]) == (4000, 100, 32)
    assert elapsed < 30, f"rendering the default split took {elapsed:.1f} s"


def test_not_solvable_by_matching_pixels():
    # Nuisance (pose, clutter, lighting) must defeat raw-pixel nearest neighbours, or there is
    # nothing for metric learning to learn. Chance recall@1 here is about 9/299 = 0.03.
    ds = load("synthetic", split="test", num_classes=30, images_per_class=10, seed=0)
    r1 = evaluate(ds.images.flatten(1).float(), ds.labels, (1,), nmi=False, map_at_r=False)["recall@1"]
    assert r1 < 0.3


def test_image_size_option():
    ds = load("synthetic", num_classes=2, images_per_class=2, image_size=48)
    assert ds.images.shape == (4, 3, 48, 48)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": MAX_CLASSES_PER_SPLIT["varies"] + 1}, "num_classes"),
        ({"train_part": "none"}, "train_part"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"images_per_class": 0}, "images_per_class"),
        ({"image_size": 8}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        load("synthetic", **options)


def test_root_is_refused():
    with pytest.raises(ValueError, match="root=None"):
        load("synthetic", root="/data")


def test_factor_colours_are_valid_rgb():
    from diva_ext.data.synthetic import COLOURS

    assert all(0 <= c <= 1 for rgb in COLOURS.values() for c in rgb)
    assert np.unique(np.asarray(list(COLOURS.values())), axis=0).shape[0] == len(COLOURS)
