"""Validation classes and the data fingerprint: the train split is fingerprinted whole (held-out
classes included), so a change to a validation class refuses a resume like any other; a split
too small to spare validation classes holds none out, with a warning, and still trains."""

import copy

import pytest
import torch

import trees
from diva_ext.data import load
from diva_ext.data.class_subset import MIN_CLASSES_TO_HOLD_OUT, split_validation_classes
from diva_ext.training import fingerprint
from diva_ext.training.trainer import DiVATrainer
from test_trainer import tiny_config


def _trainer(root, out, seed):
    config = tiny_config(dataset="folder", data_root=str(root), val_fraction=0.4, seed=seed)
    return DiVATrainer(config, out, progress=False, log=lambda line: None, dataset_options={})


@pytest.fixture
def folder_tree(tmp_path, generator):
    classes = 5 + int(torch.randint(4, (), generator=generator))
    seed = int(torch.randint(2**31, (), generator=generator))
    return trees.folder(tmp_path / "data", classes_per_split=classes, per_class=2), classes, seed


def test_the_record_covers_the_held_out_classes(folder_tree, tmp_path):
    root, classes, seed = folder_tree
    trainer = _trainer(root, tmp_path / "run", seed)
    record = trainer.data_record["fingerprint"]
    assert trainer.val_set is not None and trainer.train_set.num_classes < classes
    assert record["train"]["images"] == 2 * classes and len(record["train"]["class_names"]) == classes
    assert record["validation_classes"] == trainer.val_set.class_names


@pytest.mark.parametrize("change", ["renamed", "image-removed"])
def test_a_changed_validation_class_refuses_the_resume(change, folder_tree, tmp_path):
    root, _, seed = folder_tree
    before = _trainer(root, tmp_path / "run", seed)
    name = before.val_set.class_names[0]
    if change == "renamed":  # "b" appended: the class keeps its place in the sorted names
        (root / "train" / name).rename(root / "train" / f"{name}b")
        pattern = f"was {name!r}, now '{name}b'"
    else:
        (root / "train" / name / "0.png").unlink()
        pattern = f"train class {name!r}: 2 images when trained, 1 now"
    after = _trainer(root, tmp_path / "run", seed)
    found = fingerprint.data_differences(before.data_record, after.data_record)
    assert any(pattern in line for line in found), found


def test_an_added_class_is_named(folder_tree, tmp_path):
    root, classes, seed = folder_tree
    before = _trainer(root, tmp_path / "run", seed)
    trees._image(root / "train" / "class_zz" / "0.png", 99, 0)
    found = fingerprint.data_differences(before.data_record, _trainer(root, tmp_path / "run", seed).data_record)
    assert f"train split: {classes} classes when trained, {classes + 1} now (new: 'class_zz')" in found


def test_records_from_before_validation_classes_read_as_none_held_out():
    split = {"images": 4, "class_names": ["a", "b"], "images_per_class": [2, 2]}
    old = {"options": {}, "fingerprint": {"train": split, "test": split}}
    now = {"options": {}, "fingerprint": {"train": split, "test": split, "validation_classes": []}}
    assert fingerprint.data_differences(old, now) == []
    held = {"options": {}, "fingerprint": {"train": split, "test": split, "validation_classes": ["a"]}}
    assert fingerprint.data_differences(old, held) == ["validation classes [] when trained, ['a'] now"]


@pytest.mark.parametrize("classes", range(2, MIN_CLASSES_TO_HOLD_OUT))
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_too_few_classes_hold_none_out_with_a_warning(classes, fraction):
    data = load("synthetic", split="train", num_classes=classes, images_per_class=2, image_size=16)
    with pytest.warns(UserWarning, match=f"val-fraction {fraction}: only {classes} training classes.*none held out"):
        train, val = split_validation_classes(data, fraction, 0, None)
    assert train is data and val is None


def test_the_smallest_split_that_holds_out_keeps_two_to_train_on():
    data = load("synthetic", split="train", num_classes=MIN_CLASSES_TO_HOLD_OUT, images_per_class=2, image_size=16)
    train, val = split_validation_classes(data, 0.2, 0, None)
    assert (train.num_classes, val.num_classes) == (2, 2)


def test_a_transform_set_on_the_subset_is_used():
    data = load("synthetic", split="train", num_classes=6, images_per_class=2, image_size=16)
    train, _ = split_validation_classes(data, 0.34, 0, None)
    marker = object()
    train.transform = lambda image: marker
    assert train.transform is data.transform and train[0][0] is marker


def test_a_record_that_missed_its_validation_classes_is_not_resumed(folder_tree, tmp_path):
    root, _, seed = folder_tree
    trainer = _trainer(root, tmp_path / "run", seed)
    state = copy.deepcopy(trainer.state_dict())
    del state["data"]["fingerprint"]["validation_classes"]  # as 151a305 wrote it
    with pytest.raises(ValueError, match="cannot resume: .*does not cover them"):
        trainer.load_state_dict(state)
    trainer.load_state_dict(copy.deepcopy(trainer.state_dict()))  # its own record: resumed
