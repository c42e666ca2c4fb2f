"""`--eval-backend` chooses evaluation's kNN/k-means implementation in `diva train` and `diva eval`.

The backends compute the same recall on tie-free data (test_evaluation_backends.py); here the flag
must reach evaluate() and a bad value must be a one-line error. The torch backend runs everywhere
(faiss is optional), so the metrics written with it must equal those `diva eval` recomputes."""

import json

import pytest

from cli_helpers import TINY, assert_one_line_error, run_cli


def test_train_and_eval_with_the_torch_backend(tmp_path, capsys, monkeypatch):
    import diva_ext.evaluation as evaluation

    seen = []
    real = evaluation.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("backend"))
        return real(*args, **kwargs)

    monkeypatch.setattr("diva_ext.training.trainer.evaluate", spy)
    out = tmp_path / "run"
    result = run_cli(capsys, "train", *TINY, "--eval-backend", "torch", "--out", out)
    assert result.returncode == 0, result.stderr
    assert seen and set(seen) == {"torch"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["eval_backend"] == "torch"

    report = tmp_path / "eval.json"
    result = run_cli(capsys, "eval", "--checkpoint", out / "checkpoint.pt", "--eval-backend", "torch",
                     "--out", report, "--no-progress")
    assert result.returncode == 0, result.stderr
    recomputed = json.loads(report.read_text())
    assert recomputed["recall@1"] == pytest.approx(metrics["final"]["recall@1"])


@pytest.mark.parametrize("command", ["train", "eval"])
def test_unknown_backend_is_a_one_line_error(command, tmp_path, capsys):
    extra = ["--out", tmp_path / "run"] if command == "train" else ["--checkpoint", tmp_path / "none.pt"]
    result = run_cli(capsys, command, "--eval-backend", "annoy", *extra)
    assert_one_line_error(result, "eval-backend", "annoy")
