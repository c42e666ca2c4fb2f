"""No silent overwrite: `diva train --out DIR` refuses a DIR that holds a run unless --resume or
--overwrite is given, and --overwrite keeps the old run until the new one has an epoch."""

import json
import shutil

import pytest

from cli_helpers import TINY, assert_one_line_error, run_cli
from diva_ext.training.trainer import DiVATrainer


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guard") / "run"
    from diva_ext import cli

    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    return out


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_second_train_into_a_run_is_refused(run_copy, capsys):
    before = _files(run_copy)
    result = run_cli(capsys, "train", *TINY, "--seed", "1", "--out", run_copy)
    assert_one_line_error(result, str(run_copy), "already holds a run", "--resume", "--overwrite")
    assert _files(run_copy) == before


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt", "metrics.json"])
def test_any_run_file_counts(name, run_copy, capsys):
    for other in ("checkpoint.pt", "best.pt", "metrics.json"):
        if other != name:
            (run_copy / other).unlink()
    result = run_cli(capsys, "train", *TINY, "--out", run_copy)
    assert_one_line_error(result, "already holds a run", name)


def test_overwrite_replaces_the_run(run_copy, capsys):
    result = run_cli(capsys, "train", *TINY, "--seed", "1", "--overwrite", "--out", run_copy)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["config"]["seed"] == 1 and [e["epoch"] for e in metrics["epochs"]] == [1]


def test_overwrite_keeps_the_old_run_until_the_new_one_has_an_epoch(run_copy, capsys):
    before = _files(run_copy)
    result = run_cli(capsys, "train", *TINY, "--overwrite", "--out", run_copy, "--data-option", "num_classes=1000")
    assert_one_line_error(result, "num_classes")
    assert _files(run_copy) == before


def test_resume_and_overwrite_together_are_refused(run_copy, capsys):
    result = run_cli(capsys, "train", *TINY, "--resume", "--overwrite", "--out", run_copy)
    assert_one_line_error(result, "not allowed with argument")


def test_a_fresh_or_empty_folder_trains(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    result = run_cli(capsys, "train", *TINY, "--out", tmp_path / "empty")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "empty" / "notes.txt").read_text() == "mine"


def test_trainer_refuses_a_run_folder_unless_told(run_copy):
    from test_trainer import SYNTHETIC, tiny_config

    before = _files(run_copy)
    trainer = DiVATrainer(tiny_config(), run_copy, progress=False, log=lambda line: None, dataset_options=SYNTHETIC)
    with pytest.raises(FileExistsError, match="already holds a run"):
        trainer.fit()
    assert _files(run_copy) == before
    trainer = DiVATrainer(tiny_config(seed=3), run_copy, progress=False, log=lambda line: None,
                          dataset_options=SYNTHETIC, overwrite=True)
    assert trainer.fit()["config"]["seed"] == 3
