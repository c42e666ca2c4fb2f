"""Turns benchmark JSON (what bench/bench_*.py write) into one markdown report plus PNG plots.

    python bench/report.py [INPUT ...] [--out bench/results/REPORT.md] [--include-smoke]

INPUT: result JSON files or folders of them (default bench/results/). Each result file gets a
section: the machine that produced it, and a table with one row per case: ours, each baseline
and the floor (median ms, peak extra MiB), ours/floor, and for each baseline the speedup of ours
(baseline time / ours time) and the memory ratio (baseline peak / ours peak). Beside the
markdown, report-<file>.png plots time and peak memory against B (log-log), the floor dashed.

Exit status: 0, also when there is nothing to report; 1 when a result file cannot be read or is
not valid JSON (the message names it; the other files are still reported); 2 for bad arguments.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plotting  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
X_KEY = "B"
FLOOR = "floor"
OURS = "ours"
MISSING = "—"


class ReportError(Exception):
    """A result file that cannot be read or parsed: reported, counted, and the exit status is 1."""


def warn(msg):
    print(f"report: {msg}", file=sys.stderr)


def find_inputs(inputs, include_smoke):
    """JSON paths to report on, in a stable order; a missing INPUT is an argument error."""
    paths = []
    for item in inputs:
        if item.is_dir():
            for path in sorted(item.glob("*.json")):
                # Smoke runs (tiny sizes) land in bench/results/ when run without --out; their
                # timings would pass for real figures in the committed report.
                if "smoke" in path.name and not include_smoke:
                    warn(f"{path}: smoke run, left out (--include-smoke keeps it)")
                    continue
                paths.append(path)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return list(dict.fromkeys(paths))


def load(path):
    """The payload of one result file; None (with a warning) for JSON that is not a benchmark."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot read: {err}") from err
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("cases"), list):
        warn(f"{path}: not a benchmark result (no 'cases' list), left out")
        return None
    cases = [c for c in payload["cases"] if _usable(c)]
    if len(cases) < len(payload["cases"]):
        warn(f"{path}: {len(payload['cases']) - len(cases)} case(s) without a numeric {X_KEY} or 'results', left out")
    if not cases:
        warn(f"{path}: no usable cases, left out")
        return None
    for case in cases:
        case["results"] = {k: _figures(v) for k, v in case["results"].items() if isinstance(v, dict)}
    machine = payload.get("machine")
    return dict(payload, cases=cases, machine=machine if isinstance(machine, dict) else {})


def _figures(result):
    """A result without non-numeric figures, so a hand-edited file cannot break formatting."""
    return {k: v for k, v in result.items()
            if k not in ("median_s", "peak_bytes") or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def _usable(case):
    return (
        isinstance(case, dict)
        and isinstance(case.get(X_KEY), (int, float))
        and isinstance(case.get("results"), dict)
    )


def layout(cases):
    """Splits the case keys: those that vary (rows, plot panels) and those fixed for the file.

    A key that always equals B (distance_weighted_negatives' T) is neither a panel nor worth a column.
    """
    keys = list(dict.fromkeys(k for c in cases for k in c if k not in ("results", X_KEY)))
    varying, fixed = [], {}
    for k in keys:
        values = [c.get(k) for c in cases]
        if all(v == c[X_KEY] for v, c in zip(values, cases)):
            fixed[k] = X_KEY
        elif len({json.dumps(v) for v in values}) == 1:
            fixed[k] = values[0]
        else:
            varying.append(k)
    return varying, fixed


def method_names(cases):
    """(variants of ours, baselines): ours first, then ours_* variants, then peers in file order."""
    names = list(dict.fromkeys(n for c in cases for n in c["results"] if n != FLOOR))
    variants = [n for n in names if n == OURS] + [n for n in names if n.startswith(OURS) and n != OURS]
    return variants, [n for n in names if n not in variants]


def num(value):
    """Three significant figures without exponent noise for the usual ranges."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def time_cell(result, notes, where, name):
    if result is None:
        return MISSING
    if "median_s" in result:
        return num(1e3 * result["median_s"])
    if "error" in result:
        notes.append(f"{where}, {name}: {result['error']}")
        return "skipped" if str(result["error"]).startswith("skipped") else "error"
    return MISSING


def mem_cell(result):
    if result is None or "peak_bytes" not in result or "median_s" not in result:
        return MISSING
    return num(result["peak_bytes"] / 2**20)


def ratio_cell(num_result, den_result, field):
    """num/den of one field, '—' when either side has no figure or the denominator is 0."""
    if not num_result or not den_result:
        return MISSING
    a, b = num_result.get(field), den_result.get(field)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0:
        return MISSING
    return num(a / b) + "×"


def _sort_key(case, keys):
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in (case.get(k) for k in keys))


def table(payload):
    """Markdown table lines and the notes on errors/skips."""
    cases = payload["cases"]
    varying, _ = layout(cases)
    variants, baselines = method_names(cases)
    header = varying + [X_KEY, "floor ms", "floor MiB"]
    for name in variants:
        header += [f"{name} ms", f"{name} MiB"]
    if OURS in variants:
        header.append("ours/floor")
    for name in baselines:
        header += [f"{name} ms", f"{name} MiB"]
        if OURS in variants:
            header += [f"speedup vs {name}", f"mem {name}/ours"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for case in sorted(cases, key=lambda c: _sort_key(c, varying + [X_KEY])):
        res = case["results"]
        where = ", ".join(f"{k}={case.get(k)}" for k in varying + [X_KEY])
        row = [str(case.get(k, MISSING)) for k in varying] + [str(case[X_KEY])]
        floor, ours = res.get(FLOOR), res.get(OURS)
        row += [time_cell(floor, notes, where, FLOOR), mem_cell(floor)]
        for name in variants:
            row += [time_cell(res.get(name), notes, where, name), mem_cell(res.get(name))]
        if OURS in variants:
            row.append(ratio_cell(ours, floor, "median_s"))
        for name in baselines:
            row += [time_cell(res.get(name), notes, where, name), mem_cell(res.get(name))]
            if OURS in variants:
                row += [ratio_cell(res.get(name), ours, "median_s"), ratio_cell(res.get(name), ours, "peak_bytes")]
        lines.append("| " + " | ".join(row) + " |")
    return lines, notes


def machine_line(machine):
    """Who produced the numbers: the card (or CPU), threads, software, date, load."""
    if not machine:
        return "**Machine:** not recorded"
    parts = []
    if "gpu" in machine:
        cuda = f", CUDA {machine['cuda']}" if "cuda" in machine else ""
        parts.append(f"{machine['gpu']} ({machine.get('device', 'cuda')}{cuda})")
        parts.append(f"host CPU {machine.get('cpu', 'unknown')}")
    else:
        parts.append(f"{machine.get('cpu', 'unknown CPU')} ({machine.get('device', 'cpu')})")
    if "threads" in machine:
        parts.append(f"{machine['threads']} threads")
    for key, label in (("torch", "torch"), ("python", "Python"), ("date", "run"), ("load_average_1min", "1-min load")):
        if key in machine:
            parts.append(f"{label} {machine[key]}")
    return "**Machine:** " + " · ".join(str(p) for p in parts)


def section(path, payload, png_name):
    machine = payload.get("machine")
    machine = machine if isinstance(machine, dict) else {}
    where = machine.get("gpu") or machine.get("cpu") or "unknown machine"
    device = machine.get("device", "?")
    smoke = " (smoke run: tiny sizes, timings not representative)" if "smoke" in path.name else ""
    lines = [f"## {payload.get('benchmark', path.stem)} — {where} ({device}){smoke}", ""]
    lines += [f"Source: `{path.name}`  ", machine_line(machine) + "  "]
    _, fixed = layout(payload["cases"])
    settings = dict(payload.get("settings") or {})
    settings.update({k: v for k, v in fixed.items() if k not in settings})
    if settings:
        lines.append("**Settings:** " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    rows, notes = table(payload)
    lines += [""] + rows + [""]
    if notes:
        lines += ["Not measured:", ""] + [f"- {n}" for n in notes] + [""]
    lines += [f"![{payload.get('benchmark', path.stem)} time and memory vs batch size]({png_name})", ""]
    return lines


PREAMBLE = """# Benchmark report

Generated by `bench/report.py` from the result JSON of `bench/bench_*.py`; each section names the
machine that produced its numbers, and ratios compare figures measured in the same run.

- `X ms`: median time per call; `X MiB`: peak memory beyond what was held before the call (GPU:
  the caching allocator's peak; CPU: the process's peak resident set, coarse).
- `floor`: the matrix products (or bandwidth) the op cannot avoid, timed the same way.
- `ours/floor`: ours' time over the floor's (1× = at the floor).
- `speedup vs X`: X's time over ours (above 1×: ours is faster).
- `mem X/ours`: X's peak memory over ours (above 1×: ours needs less; — where ours' peak is 0).
- Plots: time and peak memory against B, log-log; the floor dashed; points at 0 bytes are not drawn.
"""


def write_report(paths, out):
    """Writes the markdown and PNGs for every readable result; returns the ReportErrors met."""
    errors, sections, used = [], [], set()
    out.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            payload = load(path)
        except ReportError as err:
            errors.append(err)
            continue
        if payload is None:
            continue
        stem = f"report-{path.stem}"
        while stem in used:  # the same file name from two folders
            stem += "-2"
        used.add(stem)
        png = out.parent / f"{stem}.png"
        varying, _ = layout(payload["cases"])
        plotting.plot_cases(payload, png, x_key=X_KEY, group_keys=tuple(varying), memory_log=True)
        sections.append((payload.get("benchmark", path.stem), path, payload, png.name))
    if sections:
        lines = [PREAMBLE]
        for _, path, payload, png_name in sorted(sections, key=lambda s: (str(s[0]), str(s[1]))):
            lines += section(path, payload, png_name)
        # A benchmark with no result file would otherwise just be absent from the report.
        benchmarks = {s.stem.removeprefix("bench_") for s in HERE.glob("bench_*.py")}
        missing = sorted(benchmarks - {str(s[0]) for s in sections})
        if missing:
            lines += ["## Not in this report", "", "No results for: " + ", ".join(f"`{m}`" for m in missing) + ".", ""]
        out.write_text("\n".join(lines))
        print(f"wrote {out} ({len(sections)} result file(s))", file=sys.stderr)
    return errors, len(sections)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", type=Path, default=[RESULTS_DIR], help="result JSON files or folders")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "REPORT.md", help="markdown path; PNGs go beside it")
    p.add_argument("--include-smoke", action="store_true", help="keep *smoke*.json found in folders")
    args = p.parse_args(argv)
    try:
        paths = find_inputs(args.inputs, args.include_smoke)
    except FileNotFoundError as err:
        p.error(str(err))
    if not paths:
        warn(f"no benchmark results (*.json) in {', '.join(map(str, args.inputs))}; "
             "run bench/run_all.py first. Nothing written.")
        return 0
    errors, written = write_report(paths, args.out)
    for err in errors:
        warn(str(err))
    if not written and not errors:
        warn("no benchmark results among the inputs. Nothing written.")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
