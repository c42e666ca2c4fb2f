"""The `diva` command: a real run, evaluation of its checkpoint, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from diva_ext import cli

TINY = ["--epochs", "1", "--batch-size", "8", "--batches-per-epoch", "2", "--queue-batches", "2", "--pretrained", "none",
        "--image-size", "16", "--rho", "10", "--milestones", "1", "--no-progress",
        "--data-option", "num_classes=6", "images_per_class=5", "image_size=16"]


def diva(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "diva_ext.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_train_then_eval(tmp_path):
    out = tmp_path / "run"
    result = diva("train", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "final metrics" in result.stdout and "recall@1" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"config", "pretraining", "epochs", "final", "best", "best_by",
                            "positive_similarity"}
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["preset"] == "small-cpu"
    evaluated = diva("eval", "--checkpoint", out / "best.pt", "--no-progress", "--out", tmp_path / "eval.json",
                     "--data-option", "num_classes=6", "images_per_class=5", "image_size=16")
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["recall@1"] == pytest.approx(metrics["final"]["recall@1"])


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def run_main(capsys, *args):
    """`diva ARGS` in this process (the error paths need no subprocess)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return _Result(code, capsys.readouterr().err)


def _assert_one_line_error(result, pattern):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("diva: error:"), result.stderr
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize("args,pattern", [
    (["train", "--epochs", "zero"], "invalid int value: 'zero'"),
    (["train", "--epochs", "0"], "epochs must be a positive integer"),
    (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["train", "--tasks", "discriminative", "colour"], "tasks must be distinct names"),
    (["train", "--batch-size", "7"], "multiple of samples-per-class"),
    (["train", "--head-weights", "shared"], "expected NAME=VALUE"),
    (["train", "--amp", "bf16"], "amp bf16 needs a CUDA device"),
    (["train", "--amp", "fp8"], "invalid choice: 'fp8'"),
    (["train", "--frozen-bn", "maybe"], "expected true or false"),
    (["train", "--dist-timeout", "0"], "dist-timeout must be a positive number"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["eval"], "the following arguments are required: --checkpoint"),
])
def test_bad_arguments(args, pattern, tmp_path, capsys):
    extra = ["--out", tmp_path / "o"] if args[0] == "train" else []
    _assert_one_line_error(run_main(capsys, *args, *extra), pattern)


@pytest.mark.parametrize("make_root,pattern", [
    (lambda tmp: tmp / "nowhere", "does not exist"),
    (lambda tmp: tmp, "CUB_200_2011/images not found under"),
])
def test_missing_or_empty_data_root(make_root, pattern, tmp_path, capsys):
    root = make_root(tmp_path)
    _assert_one_line_error(run_main(capsys, "train", "--dataset", "cub200", "--data-root", root, "--out", tmp_path / "o"),
                           pattern)


def test_missing_checkpoint_for_resume(tmp_path, capsys):
    _assert_one_line_error(run_main(capsys, "train", "--resume", "--out", tmp_path / "empty"), "no checkpoint at")


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x00garbage")
    _assert_one_line_error(run_main(capsys, "eval", "--checkpoint", bad), "cannot read checkpoint")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _assert_one_line_error(run_main(capsys, "train", *TINY, "--out", locked / "run"), "cannot write to output folder")


def test_output_folder_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _assert_one_line_error(run_main(capsys, "train", *TINY, "--out", blocker / "run"), "cannot write to output folder")
