"""Absurd but finite numbers on `diva train`'s command line end in one line naming the option:
refused where the options are checked (TrainConfig.validate) when the value can never work, or,
when it only fails once training runs (a learning rate of 1e38), stopped by the trainer's
non-finite guard with a line that names the options to lower. Never a traceback, never
"internal error", and nothing written for a refused run."""

import pytest

from cli_helpers import TINY, assert_one_line_error, run_cli

REFUSED = [
    (["--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["--batch-size", "-8"], "batch-size must be a positive integer, got -8"),
    (["--batch-size", "0"], "batch-size must be a positive integer, got 0"),
    (["--samples-per-class", "0"], "samples-per-class must be a positive integer, got 0"),
    (["--samples-per-class", "-2"], "samples-per-class must be a positive integer, got -2"),
    (["--batches-per-epoch", "0"], "batches-per-epoch must be a positive integer, got 0"),
    (["--queue-batches", "-1"], "queue-batches must be a positive integer, got -1"),
    (["--eval-every", "0"], "eval-every must be a positive integer, got 0"),
    (["--lr=-1e-3"], "lr must be a finite number > 0"),
    (["--lr", "1e400"], "argument --lr: expected a finite number"),  # overflows to inf when parsed
    (["--beta-lr", "0"], "beta-lr must be a finite number > 0"),
    (["--decorrelation-lr", "-1"], "decorrelation-lr must be a finite number > 0"),
    (["--gamma", "0"], "gamma must be a finite number > 0"),
    (["--momentum", "-0.1"], "momentum must be a finite number >= 0"),
    (["--temperature", "0"], "temperature must be a finite number > 0"),
    (["--temperature", "1e-300"], "temperature must be >= 2^-30"),
    (["--temperature", "1e-20"], "temperature must be >= 2^-30"),  # DaNCE's float32 range
    (["--lower-cutoff", "2"], "lower-cutoff must be < 2"),
    (["--lower-cutoff", "1e38", "--upper-cutoff", "inf"], "lower-cutoff must be < 2"),
    (["--head-weights", "shared=1e39"], "head-weights shared must be <= 3.4e+38"),
]


@pytest.mark.parametrize("flags,pattern", REFUSED, ids=[" ".join(f) for f, _ in REFUSED])
def test_values_that_can_never_work_are_refused_before_training(flags, pattern, tmp_path, capsys):
    result = run_cli(capsys, "train", *TINY, *flags, "--out", tmp_path / "o")
    line = assert_one_line_error(result, pattern)
    assert "internal error" not in line
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


REFUSED_AT_THE_LIMIT = [
    (["--lr", "1e38"], "lr must be <= 3.4e+37 (Adam's first step"),
    (["--beta-lr", "1e38"], "beta-lr must be <= 3.4e+37"),
    (["--decorrelation-lr", "1e38"], "decorrelation-lr must be <= 3.4e+37"),
    (["--lr", "1e36", "--gamma", "100"], "lr must be <= 3.4e+37 (after the milestones' gamma: 1e+38)"),
]


@pytest.mark.parametrize("flags,pattern", REFUSED_AT_THE_LIMIT, ids=[" ".join(f) for f, _ in REFUSED_AT_THE_LIMIT])
def test_learning_rates_whose_adam_step_overflows_float32_are_refused(flags, pattern, tmp_path, capsys):
    # Before: "RuntimeError: value cannot be converted to type float without overflow (internal error)".
    result = run_cli(capsys, "train", *TINY, *flags, "--out", tmp_path / "o")
    assert "internal error" not in assert_one_line_error(result, pattern)


DIVERGING = [
    (["--lr", "3e37"], ["training diverged", "not finite", "--lr"]),
    (["--decorrelation-lr", "3e37"], ["training loss is not finite", "--decorrelation-lr"]),
    (["--margin", "1e38"], ["training loss is not finite", "--margin"]),
    (["--beta-init", "1e38"], ["training loss is not finite", "--beta-init"]),
]


@pytest.mark.parametrize("flags,patterns", DIVERGING, ids=[" ".join(f) for f, _ in DIVERGING])
def test_settings_that_make_training_diverge_stop_in_one_line_naming_them(flags, patterns, tmp_path, capsys):
    result = run_cli(capsys, "train", *TINY, *flags, "--out", tmp_path / "o")
    assert "internal error" not in assert_one_line_error(result, *patterns)
