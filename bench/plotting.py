"""Plots of benchmark JSON: time (and peak memory) against batch size, one panel per group."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_cases(payload, path, x_key, group_keys, memory_log=False):
    """memory_log: log-scale the memory axis too; points at 0 bytes (CPU peaks can be) are dropped."""
    groups = {}
    for case in payload["cases"]:
        groups.setdefault(tuple(case.get(k) for k in group_keys), []).append(case)
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7), squeeze=False)
    for col, (key, cases) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        # A method can be missing from some cases (e.g. a peer library not installed there).
        names = list(dict.fromkeys(n for c in cases for n in c["results"]))
        for name in names:
            pts = sorted(
                ((c[x_key], c["results"][name]) for c in cases if "median_s" in c["results"].get(name, {})),
                key=lambda p: p[0],
            )
            if not pts:
                continue
            style = dict(linestyle="--", color="black") if name == "floor" else {}
            times = [1e3 * p[1]["median_s"] for p in pts]
            axes[0][col].plot([p[0] for p in pts], times, marker="o", label=name, **style)
            mem = [(x, r["peak_bytes"] / 2**20) for x, r in pts
                   if "peak_bytes" in r and (r["peak_bytes"] > 0 or not memory_log)]
            if mem:
                axes[1][col].plot([m[0] for m in mem], [m[1] for m in mem], marker="o", label=name, **style)
        title = ", ".join(f"{k}={v}" for k, v in zip(group_keys, key))
        axes[0][col].set_title(title)
        for row, label in ((0, "median time (ms)"), (1, "peak extra memory (MiB)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            # Memory can be ~0 (nothing beyond the inputs): log scale only where asked.
            ax.set_yscale("log" if row == 0 or memory_log else "linear")
            ax.set_xlabel(x_key)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    machine = payload.get("machine", {})
    where = machine.get("gpu", machine.get("cpu", "unknown machine"))
    fig.suptitle(f"{payload.get('benchmark', '?')} on {where} ({machine.get('device', '?')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
