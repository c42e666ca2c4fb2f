"""Resume only what was trained: the dataset options and a fingerprint of the data (class names,
image counts) are saved with the run, and resuming on other data is refused, naming the difference."""

import shutil

import pytest

import trees
from cli_helpers import DATA_OPTIONS, TINY, assert_one_line_error, run_cli
from diva_ext.training import checkpoint as ckpt
from diva_ext.training import fingerprint
from diva_ext.training.trainer import DiVATrainer

# TINY without its --data-option (the last four arguments), to pass other options.
TINY_FLAGS = TINY[:-(1 + len(DATA_OPTIONS))]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "run"
    from diva_ext import cli

    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder")
    root = trees.folder(base / "data", classes_per_split=4, per_class=3)
    from diva_ext import cli

    assert cli.main(["train", *TINY_FLAGS, "--dataset", "folder", "--data-root", str(root),
                     "--out", str(base / "run")]) == 0
    return root, base / "run"


def _copy(path, tmp_path, name):
    shutil.copytree(path, tmp_path / name)
    return tmp_path / name


def test_checkpoints_record_the_data(synthetic_run):
    for name in ("checkpoint.pt", "best.pt"):
        data = ckpt.load_checkpoint(synthetic_run / name)["data"]
        assert data["options"] == {"num_classes": 6, "images_per_class": 5, "image_size": 16, "seed": 0}
        assert data["fingerprint"]["train"]["images"] == 30
        assert data["fingerprint"]["train"]["images_per_class"] == [5] * 6
        assert len(data["fingerprint"]["test"]["class_names"]) == 6


def test_resume_without_options_reuses_the_trained_ones(synthetic_run, tmp_path, capsys):
    out = _copy(synthetic_run, tmp_path, "run")
    result = run_cli(capsys, "train", *TINY_FLAGS, "--epochs", "2", "--resume", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "30 train / 30 test images" in result.stdout


@pytest.mark.parametrize("options,pattern", [
    (["num_classes=8", "images_per_class=5", "image_size=16"],
     "data option num_classes=6 when trained, 8 now"),
    (["images_per_class=6"], "data option images_per_class=5 when trained, 6 now"),
    (["seed=3"], "data option seed=0 when trained, 3 now"),
])
def test_resume_with_other_options_is_refused(options, pattern, synthetic_run, tmp_path, capsys):
    out = _copy(synthetic_run, tmp_path, "run")
    before = (out / "checkpoint.pt").read_bytes()
    result = run_cli(capsys, "train", *TINY_FLAGS, "--epochs", "2", "--resume", "--out", out,
                     "--data-option", *options)
    assert_one_line_error(result, "cannot resume", "other data", pattern)
    assert (out / "checkpoint.pt").read_bytes() == before


def _add_image(root, class_name):
    trees._image(root / "train" / class_name / "extra.png", 99, 0)


@pytest.mark.parametrize("change,pattern", [
    (lambda root: _add_image(root, "class_1"), "train class 'class_1': 3 images when trained, 4 now"),
    (lambda root: (root / "train" / "class_2").rename(root / "train" / "class_2b"),
     "train class 2 was 'class_2', now 'class_2b'"),
    (lambda root: _add_image(root, "class_9"), "train split: 4 classes when trained, 5 now"),
    (lambda root: (root / "test" / "class_5" / "0.png").unlink(), "test split: 12 images when trained, 11 now"),
], ids=["image-added", "class-renamed", "class-added", "test-image-removed"])
def test_resume_on_a_changed_tree_is_refused(change, pattern, folder_run, tmp_path, capsys):
    root, run = folder_run
    root, out = _copy(root, tmp_path, "data"), _copy(run, tmp_path, "run")
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    state["config"]["data_root"] = str(root)  # the copy is where the data now is
    ckpt.save_checkpoint(state, out / "checkpoint.pt")
    change(root)
    result = run_cli(capsys, "train", *TINY_FLAGS, "--epochs", "2", "--resume", "--out", out)
    assert_one_line_error(result, "cannot resume", "other data", pattern)


def test_resume_on_the_same_tree_trains_on(folder_run, tmp_path, capsys):
    root, run = folder_run
    out = _copy(run, tmp_path, "run")
    result = run_cli(capsys, "train", *TINY_FLAGS, "--epochs", "2", "--resume", "--out", out)
    assert result.returncode == 0, result.stderr


def test_trainer_resume_refuses_other_options(synthetic_run, tmp_path):
    from test_trainer import tiny_config

    out = _copy(synthetic_run, tmp_path, "run")
    trainer = DiVATrainer(tiny_config(epochs=2, recall_at=(1, 2, 4, 8)), out, progress=False, log=lambda line: None,
                          dataset_options={"num_classes": 7, "images_per_class": 5, "image_size": 16})
    with pytest.raises(ValueError, match="data option num_classes=6 when trained, 7 now"):
        trainer.resume()


def test_differences_are_listed_at_most_three():
    split = {"images": 4, "class_names": ["a", "b"], "images_per_class": [2, 2]}
    saved = {"options": {"x": 1, "y": 2, "z": 3, "w": 4}, "fingerprint": {"train": split, "test": split}}
    now = {"options": {}, "fingerprint": {"train": split, "test": split}}
    found = fingerprint.data_differences(saved, now)
    assert len(found) == 4 and fingerprint.describe(found).endswith("; and 1 more")
    assert fingerprint.data_differences(saved, saved) == []


def test_eval_defaults_to_the_trained_data_options(synthetic_run, capsys):
    result = run_cli(capsys, "eval", "--checkpoint", synthetic_run / "best.pt", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "synthetic test split (30 images, 6 classes)" in result.stdout
    result = run_cli(capsys, "eval", "--checkpoint", synthetic_run / "best.pt", "--no-progress",
                     "--data-option", "num_classes=4")
    assert result.returncode == 0, result.stderr
    assert "synthetic test split (20 images, 4 classes)" in result.stdout
