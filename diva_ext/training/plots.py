"""PNG plots of a run's metrics.json: losses and retrieval metrics per epoch."""

import io
from pathlib import Path
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diva_ext.training.checkpoint import write_bytes_atomic  # noqa: E402


def _save_atomically(fig, path: Path) -> None:
    """A reader (or a crash mid-write) never sees half a PNG: rendered in memory, then replaced."""
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=110, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def plot_history(epochs: List[Dict[str, Any]], out_dir: Path) -> List[Path]:
    """Write loss.png and recall.png into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = []
    if not epochs:
        return paths
    xs = [e["epoch"] for e in epochs]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [e["loss"] for e in epochs], marker="o", label="total", color="black")
    for name in sorted({k for e in epochs for k in e.get("losses", {})}):
        ax.plot(xs, [e["losses"].get(name, float("nan")) for e in epochs], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "loss.png")
    _save_atomically(fig, paths[-1])

    evaluated = [e for e in epochs if "recall@1" in e]
    if evaluated:
        fig, ax = plt.subplots(figsize=(6, 4))
        keys = [k for k in evaluated[-1] if k.startswith("recall@") or k in ("nmi", "map@r")]
        for key in keys:
            ax.plot([e["epoch"] for e in evaluated], [e[key] for e in evaluated], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test metric")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "recall.png")
        _save_atomically(fig, paths[-1])
    return paths
