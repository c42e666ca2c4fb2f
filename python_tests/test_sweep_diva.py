"""scripts/sweep_diva.py on a tiny configuration: every grid point and head weighting is scored
on the validation classes only (the test split is never embedded), and its table and JSON agree."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import sweep_diva  # noqa: E402

TINY = ["--epochs", "1", "--milestones", "1", "--alphas", "0.1", "0.3", "--temperatures", "0.1", "--rhos", "0",
        "--head-weights", "1", "0.5", "--pretrained", "none", "--val-fraction", "0.34", "--no-progress",
        "--data-option", "num_classes=6", "images_per_class=5", "image_size=16",
        "--set", "batch_size=8", "batches_per_epoch=2", "queue_batches=2", "image_size=16", "recall_at=[1,2]"]


def test_sweep_scores_every_point_on_validation_only(tmp_path, monkeypatch):
    from diva_ext.training import trainer

    embedded = []
    original = trainer.embed_heads
    monkeypatch.setattr(trainer, "embed_heads", lambda model, dataset, *a, **k:
                        embedded.append(dataset) or original(model, dataset, *a, **k))
    monkeypatch.setattr(trainer.DiVATrainer, "evaluate",
                        lambda self, *a, **k: pytest.fail("the sweep evaluated through the trainer (test split)"))
    assert sweep_diva.main([*TINY, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "sweep_diva.json").read_text())
    assert [r["method"] for r in result["runs"]] == ["margin baseline", "DiVA", "DiVA"]
    assert [r["alpha"] for r in result["runs"][1:]] == [0.1, 0.3]
    assert all(len(r["scores"]) == 2 for r in result["runs"][1:]) and len(result["runs"][0]["scores"]) == 1
    # Only validation sets (2 held-out classes of 5 images) were embedded, once per run.
    assert len(embedded) == 3 and all(d.num_classes == 2 and len(d) == 10 for d in embedded)
    table = (tmp_path / "sweep_diva.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| DiVA") or line.startswith("| margin")]
    assert len(rows) == 5
    best = max(s["recall@1"] for r in result["runs"] for s in r["scores"])
    assert f"{100 * best:.1f}" in rows[0]  # best first
    assert (tmp_path / "sweep_diva.png").stat().st_size > 0


def test_the_sweep_refuses_a_preset_without_validation_classes():
    with pytest.raises(ValueError, match="validation classes"):
        sweep_diva.config_for("small-cpu", {"val_fraction": 0.0})
