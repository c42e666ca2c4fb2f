"""Plots are replaced atomically: a crash while a PNG is written leaves the previous one intact
and no stray file, as for the checkpoints and metrics.json."""

import pytest
from matplotlib.figure import Figure

from diva_ext.training.plots import plot_history

HISTORY = [{"epoch": 1, "loss": 2.0, "losses": {"margin": 1.0}, "recall@1": 0.3, "nmi": 0.4},
           {"epoch": 2, "loss": 1.5, "losses": {"margin": 0.8}, "recall@1": 0.4, "nmi": 0.5}]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_are_pngs_and_leave_no_temporary_files(tmp_path):
    paths = plot_history(HISTORY, tmp_path)
    assert sorted(p.name for p in paths) == ["loss.png", "recall.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "recall.png"]


def test_a_failed_write_keeps_the_previous_png(tmp_path, monkeypatch):
    plot_history(HISTORY, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash_midway(self, target, *args, **kwargs):
        target = open(target, "wb") if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__") else target
        target.write(PNG_MAGIC + b"half")
        target.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        plot_history(HISTORY[:1], tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
