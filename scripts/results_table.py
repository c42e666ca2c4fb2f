"""The README's results table: the margin-loss baseline, DiVA, and each auxiliary task added alone
to the discriminative one, on the embedded default data's test classes.

Runs ``diva train`` (preset small-cpu, the default job) for each method and seed with the same
budget, one after another, and summarises the final epoch's test metrics as mean ± std over
seeds: R@1, R@2 and NMI of the test-time embedding, and R@1 of the discriminative head alone
(the final epoch, not the best: choosing an epoch on the test classes would flatter both; the
preset's DiVA settings were chosen on validation classes, scripts/sweep_diva.py).

    .venv/bin/python scripts/results_table.py [--seeds 0 1 2] [--methods baseline diva ...]
        [--out runs/table] [--table docs/results/results_table] [-- EXTRA diva train FLAGS]

Writes OUT/<method>-s<seed>/ (each run's files; with --reuse a finished run there is read, not retrained),
OUT/summary.json, TABLE.json and TABLE.md (the markdown table) and prints the table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {
    "baseline": ("margin baseline", ["--tasks", "discriminative"]),
    "diva": ("DiVA", []),
    "selfsimilarity": ("+ self-similarity only", ["--tasks", "discriminative", "selfsimilarity"]),
    "shared": ("+ shared only", ["--tasks", "discriminative", "shared"]),
    "intra": ("+ intra-class only", ["--tasks", "discriminative", "intra"]),
}
METRICS = (("recall@1", "R@1"), ("recall@2", "R@2"), ("nmi", "NMI"), ("disc_recall@1", "R@1 disc. head"))


def run(key: str, seed: int, out: Path, extra, reuse: bool) -> dict:
    name, flags = METHODS[key]
    run_dir = out / f"{key}-s{seed}"
    metrics_path = run_dir / "metrics.json"
    wall = None
    done = reuse and metrics_path.exists() and json.loads(metrics_path.read_text())["final"].get("epoch")
    if not done:
        cmd = [str(Path(sys.executable).parent / "diva"), "train", "--seed", str(seed), "--out", str(run_dir),
               "--overwrite", "--no-progress", *flags, *extra]
        print("+", " ".join(cmd), flush=True)
        start = time.time()
        subprocess.run(cmd, check=True)
        wall = round(time.time() - start, 1)
    document = json.loads(metrics_path.read_text())
    final = document["final"]
    heads = final.get("heads", {})
    return {"method": key, "name": name, "seed": seed, "wall_seconds": wall, "load_average": os.getloadavg()[0],
            "epoch": final["epoch"], "recall@1": final["recall@1"], "recall@2": final["recall@2"],
            "nmi": final["nmi"], "disc_recall@1": heads.get("discriminative", final)["recall@1"],
            "val_recall@1": final.get("validation", {}).get("recall@1"),
            "val_disc_recall@1": final.get("validation", {}).get("heads", {}).get("discriminative", {}).get("recall@1"),
            "config": {k: document["config"][k] for k in ("epochs", "batch_size", "tasks", "pretrained",
                                                          "val_fraction", "temperature", "rho", "head_weights",
                                                          "weight_selfsimilarity", "weight_shared", "weight_intra")
                       if k in document["config"]}}


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(runs, validation: bool = False) -> str:
    """Test metrics, mean ± std over seeds; with ``validation`` also the validation classes' R@1
    (combined, discriminative head) beside them."""
    metrics = METRICS + ((("val_recall@1", "val R@1"), ("val_disc_recall@1", "val R@1 disc. head"))
                         if validation else ())
    lines = ["| method | " + " | ".join(f"{label} (%)" for _, label in metrics) + " | seeds | wall time per run (s) |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for key in METHODS:
        mine = [r for r in runs if r["method"] == key]
        if not mine:
            continue
        cells = []
        for metric, _ in metrics:
            if any(r[metric] is None for r in mine):
                cells.append("—")
                continue
            m, s = mean_std([100 * r[metric] for r in mine])
            cells.append(f"{m:.1f} ± {s:.1f}")
        walls = [r["wall_seconds"] for r in mine if r["wall_seconds"] is not None]
        wall = f"{statistics.median(walls):.0f}" if walls else "—"
        lines.append(f"| {METHODS[key][0]} | " + " | ".join(cells) +
                     f" | {', '.join(str(r['seed']) for r in mine)} | {wall} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("runs/table"))
    parser.add_argument("--table", type=Path, default=Path("docs/results/results_table"),
                        help="writes TABLE.json and TABLE.md")
    parser.add_argument("--with-validation", action="store_true",
                        help="also the validation classes' R@1 (runs with val_fraction > 0)")
    parser.add_argument("--reuse", action="store_true", help="read runs already finished in OUT (same flags!)")
    args = parser.parse_args(argv)
    runs = [run(key, seed, args.out, extra, args.reuse) for seed in args.seeds for key in args.methods]
    text = table(runs, args.with_validation)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"runs": runs, "table": text, "extra_flags": extra, "split": "test classes, final epoch"}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.table.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
