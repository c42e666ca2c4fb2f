"""Plots of benchmark JSON: time (and peak memory) against batch size, one panel per group."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_cases(payload, path, x_key, group_keys):
    groups = {}
    for case in payload["cases"]:
        groups.setdefault(tuple(case[k] for k in group_keys), []).append(case)
    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7), squeeze=False)
    for col, (key, cases) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        names = list(cases[0]["results"].keys())
        for name in names:
            pts = [(c[x_key], c["results"][name]) for c in cases if "error" not in c["results"][name]]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            style = dict(linestyle="--", color="black") if name == "floor" else {}
            axes[0][col].plot(xs, [1e3 * p[1]["median_s"] for p in pts], marker="o", label=name, **style)
            axes[1][col].plot(xs, [p[1]["peak_bytes"] / 2**20 for p in pts], marker="o", label=name, **style)
        title = ", ".join(f"{k}={v}" for k, v in zip(group_keys, key))
        axes[0][col].set_title(title)
        for row, label in ((0, "median time (ms)"), (1, "peak extra memory (MiB)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            # Memory can be ~0 (nothing beyond the inputs): log scale only for time.
            ax.set_yscale("log" if row == 0 else "linear")
            ax.set_xlabel(x_key)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    machine = payload["machine"]
    fig.suptitle(f"{payload['benchmark']} on {machine.get('gpu', machine['cpu'])} ({machine['device']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
