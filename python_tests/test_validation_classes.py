"""Validation classes carved out of the training classes: disjoint, relabelled, read through the
evaluation transform; the best epoch is chosen on them, not on the test classes; the miners'
upper cutoff defaults to none."""

import math

import pytest
import torch

from diva_ext.data import load
from diva_ext.data.class_subset import split_validation_classes, validation_class_count
from diva_ext.training.config import TrainConfig
from diva_ext.training.presets import PRESETS
from diva_ext.training.trainer import BEST_BY, BEST_BY_WITHOUT_VALIDATION, DiVATrainer
from test_trainer import SYNTHETIC, tiny_config


def test_held_out_classes_are_disjoint_relabelled_and_evaluated_without_augmentation(generator):
    seed = int(torch.randint(2**31, (), generator=generator))
    num = 5 + seed % 13
    data = load("synthetic", split="train", num_classes=num, images_per_class=3, image_size=16, seed=seed % 97)
    augment = object()
    data.transform = lambda image: augment
    train, val = split_validation_classes(data, 0.3, seed, eval_transform=None)
    assert val.num_classes == validation_class_count(num, 0.3) == max(2, round(0.3 * num))
    assert train.num_classes + val.num_classes == num
    assert not set(train.class_names) & set(val.class_names)
    for part in (train, val):
        assert torch.equal(torch.unique(part.labels), torch.arange(part.num_classes))
        assert len(part) == 3 * part.num_classes
    # Every item is the base image of its class: labels map back through class_names.
    for i in range(len(val)):
        image, label, index = val[i]
        source = int(val.indices[i])
        assert index == i and val.class_names[label] == data.class_names[int(data.labels[source])]
        assert torch.equal(image, data.images[source].float() / 255)  # eval_transform None: no augmentation
    assert train[0][0] is augment and data.transform is not None  # the training part keeps its transform
    # Another seed, other held-out classes (for most seeds; 20 tries cannot all agree by chance).
    others = {tuple(split_validation_classes(data, 0.3, seed + k, None)[1].classes) for k in range(20)}
    assert len(others) > 1


@pytest.mark.parametrize("num, fraction, match", [(3, 0.5, "leaves 1 to train on"), (10, 1.0, r"\[0, 1\)"),
                                                  (10, -0.1, r"\[0, 1\)")])
def test_bad_fractions_are_refused(num, fraction, match):
    with pytest.raises(ValueError, match=match):
        validation_class_count(num, fraction)


def test_zero_fraction_holds_nothing_out():
    data = load("synthetic", split="train", num_classes=4, images_per_class=2, image_size=16)
    train, val = split_validation_classes(data, 0.0, 0, None)
    assert train is data and val is None


def _run(tmp_path, **overrides):
    trainer = DiVATrainer(tiny_config(**overrides), tmp_path, progress=False, log=lambda line: None,
                          dataset_options=SYNTHETIC)
    return trainer, trainer.fit()


def test_every_evaluation_reports_validation_and_the_best_epoch_is_chosen_on_it(tmp_path):
    trainer, metrics = _run(tmp_path, val_fraction=0.34, epochs=2)
    assert trainer.val_set.num_classes == 2 and trainer.train_set.num_classes == 4
    assert metrics["best_by"] == BEST_BY
    for epoch in metrics["epochs"]:
        assert 0 <= epoch["validation"]["recall@1"] <= 1
        assert set(epoch["validation"]["heads"]) == set(trainer.config.tasks)
    # Test and validation disagree on purpose: the best epoch follows validation only.
    trainer.history = [{"epoch": 1, "recall@1": 0.9, "validation": {"recall@1": 0.2}},
                       {"epoch": 2, "recall@1": 0.1, "validation": {"recall@1": 0.6}},
                       {"epoch": 3, "recall@1": 0.8, "validation": {"recall@1": 0.6}}]
    assert trainer.best()["epoch"] == 3  # the latest of equal validation scores
    trainer.history[2]["validation"]["recall@1"] = 0.5
    assert trainer.best()["epoch"] == 2


def test_without_validation_classes_the_test_split_chooses_and_says_so(tmp_path):
    trainer, metrics = _run(tmp_path, val_fraction=0.0, tasks=("discriminative",))
    assert trainer.val_set is None and trainer.train_set.num_classes == 6
    assert metrics["best_by"] == BEST_BY_WITHOUT_VALIDATION and "validation" not in metrics["final"]


def test_small_cpu_holds_out_validation_classes():
    assert PRESETS["small-cpu"]["val_fraction"] > 0


def test_the_miners_have_no_upper_cutoff_by_default_and_it_stays_configurable(tmp_path):
    assert TrainConfig().upper_cutoff == math.inf
    trainer = DiVATrainer(tiny_config(), tmp_path, progress=False, log=lambda line: None, dataset_options=SYNTHETIC)
    assert trainer.miners["discriminative"].upper_cutoff == math.inf
    assert trainer.miners["shared"].miner.upper_cutoff == math.inf
    assert trainer.contrastive.criterion.upper_cutoff == TrainConfig().dance_upper_cutoff == 1.4
    trainer = DiVATrainer(tiny_config(upper_cutoff=1.3, dance_upper_cutoff=1.2), tmp_path, progress=False,
                          log=lambda line: None, dataset_options=SYNTHETIC)
    assert trainer.miners["discriminative"].upper_cutoff == 1.3
    assert trainer.contrastive.criterion.upper_cutoff == 1.2
    with pytest.raises(ValueError, match="dance-upper-cutoff"):
        tiny_config(lower_cutoff=1.5).validate()
