"""The README's results table: the margin-loss baseline against DiVA on the embedded default data.

Runs ``diva train`` (preset small-cpu, the default job) for each method and seed with the same
budget, one after another, and summarises the final epoch's R@1 and NMI as mean ± std over
seeds (the final epoch, not the best: choosing an epoch on the test classes would flatter both).

    .venv/bin/python scripts/results_table.py [--seeds 0 1 2] [--out runs/table]

Writes OUT/<method>-s<seed>/ (each run's files), OUT/summary.json and prints a markdown table.
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
    "margin baseline": ["--tasks", "discriminative"],
    "DiVA": [],
}


def run(method: str, flags, seed: int, out: Path) -> dict:
    run_dir = out / f"{method.split()[0].lower()}-s{seed}"
    cmd = [str(Path(sys.executable).parent / "diva"), "train", "--seed", str(seed), "--out", str(run_dir), *flags]
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - start
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    return {"method": method, "seed": seed, "wall_seconds": round(wall, 1), "load_average": os.getloadavg()[0],
            "recall@1": final["recall@1"], "nmi": final["nmi"], "epoch": final["epoch"]}


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/table"))
    args = parser.parse_args(argv)
    runs = [run(method, flags, seed, args.out) for seed in args.seeds for method, flags in METHODS.items()]
    lines = ["| method | R@1 (%) | NMI (%) | wall time per run (s) |", "|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        r1, nmi = mean_std([100 * r["recall@1"] for r in mine]), mean_std([100 * r["nmi"] for r in mine])
        wall = statistics.median(r["wall_seconds"] for r in mine)
        lines.append(f"| {method} | {r1[0]:.2f} ± {r1[1]:.2f} | {nmi[0]:.2f} ± {nmi[1]:.2f} | {wall:.0f} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"runs": runs, "table": table}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
