"""The table bench/gpu_check.sh prints at its end: each step's outcome, then every benchmark.

    python bench/gpu_summary.py STEPS_TSV [RESULT_JSON ...]

STEPS_TSV: one line per step, `name<TAB>status<TAB>seconds<TAB>note`, as gpu_check.sh writes it.
Each RESULT_JSON (what bench/bench_*.py write) gets a table, one row per case: the median ms of
ours, each peer and the floor, and each peer's time over ours (above 1: ours is faster). A file
that cannot be read is named in its place; the others are still shown.
Exit status: 1 when a step failed, timed out or was not run, or a result file could not be read;
else 0.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CASE_KEYS = ("mode", "B", "K", "D")


def read_steps(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            name, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
            rows.append({"step": name, "status": status, "s": seconds, "note": note})
    return rows


def benchmark_rows(payload):
    rows = []
    for case in payload["cases"]:
        results = case["results"]
        row = {k: case[k] for k in CASE_KEYS if k in case}
        row.update(common.time_columns(results))
        for name, r in results.items():
            if name not in ("ours", "floor"):
                row[f"{name}/ours"] = common.ratio(results["ours"], r) if "ours" in results else None
        if "floor" in results and "ours" in results:
            row["ours/floor"] = common.ratio(results["floor"], results["ours"])
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows


def main(argv):
    if not argv:
        sys.exit("usage: python bench/gpu_summary.py STEPS_TSV [RESULT_JSON ...]")
    failed = False
    steps = read_steps(argv[0])
    print("== gpu_check steps")
    common.print_table(steps, ["step", "status", "s", "note"])
    # `skipped` marks a step left out by design (gpu_check.sh's dry run, --no-build).
    failed |= any(s["status"] not in ("ok", "skipped") for s in steps)
    for path in argv[1:]:
        try:
            payload = json.loads(Path(path).read_text())
            rows = benchmark_rows(payload)
            machine = payload.get("machine", {})
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"\n== {Path(path).name}: cannot be read ({type(err).__name__}: {err})")
            failed = True
            continue
        where = machine.get("gpu") or machine.get("cpu", "?")
        print(f"\n== {payload.get('benchmark', Path(path).stem)} on {where} (torch {machine.get('torch', '?')}):"
              " median ms; peer/ours above 1 = ours faster")
        if rows:
            common.print_table(rows, list(dict.fromkeys(c for r in rows for c in r)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
