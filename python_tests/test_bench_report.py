"""bench/report.py: the markdown holds the figures of the JSON it read, the plots exist, and
unreadable or missing input is reported as such.

The numbers are checked against values recomputed here from the JSON (time in ms, MiB, ratios),
by parsing the table back, so a swapped column or a wrong ratio fails.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench" / "report.py"


def run_report(*args):
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def parse_section(markdown, source):
    """Rows of the table in the section whose Source line names `source`, as header->cell dicts."""
    text = markdown.split(f"Source: `{source}`", 1)[1].split("\n## ", 1)[0]
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return text, [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]]


def close(cell, expected):
    """The cell (three significant figures, maybe with ×) is the expected value."""
    if expected == 0:
        return cell == "0"
    return abs(float(cell.rstrip("×")) - expected) <= 0.006 * abs(expected)


def check_against_json(rows, payload, key_cols):
    cases = {tuple(str(c[k]) for k in key_cols): c["results"] for c in payload["cases"]}
    assert len(rows) == len(cases)
    for row in rows:
        res = cases[tuple(row[k] for k in key_cols)]
        ours = res["ours"]
        for name, r in res.items():
            if "median_s" not in r:
                continue
            assert close(row[f"{name} ms"], 1e3 * r["median_s"]), (name, row)
            assert close(row[f"{name} MiB"], r["peak_bytes"] / 2**20), (name, row)
            if name == "floor":
                assert close(row["ours/floor"], ours["median_s"] / r["median_s"]), row
            elif not name.startswith("ours"):
                assert close(row[f"speedup vs {name}"], r["median_s"] / ours["median_s"]), (name, row)
                if ours["peak_bytes"] > 0:
                    assert close(row[f"mem {name}/ours"], r["peak_bytes"] / ours["peak_bytes"]), (name, row)
                else:
                    assert row[f"mem {name}/ours"] == "—"


def gpu_payload():
    """A result as bench_distance_weighted_negatives.py writes it on a GPU, with a skipped and a failed
    method."""
    def r(ms, mib):
        return {"median_s": ms / 1e3, "iqr_s": 0.0, "runs": 10, "peak_bytes": int(mib * 2**20)}

    cases = []
    for d in (128, 512):
        for b in (1024, 4096):
            s = b / 1024 * d / 128
            results = {"floor": r(0.05 * s, 4 * s), "ours": r(0.2 * s, 5 * s), "ours_miner": r(0.3 * s, 6 * s),
                       "reference": r(1.7 * s, 64 * s), "compiled_reference": r(0.9 * s, 40 * s)}
            skipped = {"error": "skipped: one call would take about 48 s (> 30 s)"}
            results["pml"] = r(3000 * s, 100 * s) if b == 1024 else skipped
            if d == 512 and b == 4096:
                results["compiled_reference"] = {"error": "CUDA out of memory. Tried to allocate 2.00 GiB"}
            cases.append({"B": b, "D": d, "T": b, "results": results})
    machine = {"device": "cuda", "torch": "2.14.1+cu130", "threads": 16, "cpu": "Intel Xeon", "python": "3.11.7",
               "load_average_1min": 0.1, "date": "2026-11-25T12:00:00+00:00",
               "gpu": "NVIDIA H100 80GB HBM3", "cuda": "13.0"}
    return {"benchmark": "distance_weighted_negatives", "machine": machine,
            "settings": {"lower_cutoff": 0.5, "upper_cutoff": 1.4, "samples_per_class": 2, "T": "B"}, "cases": cases}


@pytest.mark.slow
def test_report_of_a_real_smoke_run(tmp_path):
    """The schema comes from the bench script itself: run its smoke size, then report on it."""
    result = tmp_path / "results" / "pairwise_distance.json"
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    bench = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_pairwise_distance.py"), "--smoke",
                            "--device", "cpu", "--out", str(result)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert bench.returncode == 0, bench.stderr[-2000:]
    out = tmp_path / "report" / "REPORT.md"
    proc = run_report(result.parent, "--out", out)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(result.read_text())
    text, rows = parse_section(out.read_text(), result.name)
    assert payload["machine"]["cpu"] in text and f"{payload['machine']['threads']} threads" in text
    # Smoke runs have one D, so it moves to the settings line; the rows are keyed by mode and B.
    check_against_json(rows, payload, ("mode", "B"))
    png = out.parent / "report-pairwise_distance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_numbers_machine_and_skips(tmp_path):
    payload = gpu_payload()
    (tmp_path / "distance_weighted_negatives-NVIDIA_H100.json").write_text(json.dumps(payload))
    out = tmp_path / "out" / "REPORT.md"
    proc = run_report(tmp_path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    text, rows = parse_section(out.read_text(), "distance_weighted_negatives-NVIDIA_H100.json")
    assert "NVIDIA H100 80GB HBM3" in text and "CUDA 13.0" in text and "16 threads" in text
    check_against_json(rows, payload, ("D", "B"))
    by_key = {(r["D"], r["B"]): r for r in rows}
    assert by_key[("128", "4096")]["pml ms"] == "skipped"
    assert by_key[("512", "4096")]["compiled_reference ms"] == "error"
    assert by_key[("512", "4096")]["speedup vs compiled_reference"] == "—"
    assert "D=512, B=4096, compiled_reference: CUDA out of memory" in text
    assert "T" not in rows[0]  # T always equals B: a setting, not a column
    assert (out.parent / "report-distance_weighted_negatives-NVIDIA_H100.png").stat().st_size > 0


def test_corrupt_json_is_named_and_the_rest_still_reported(tmp_path):
    (tmp_path / "distance_weighted_negatives-gpu.json").write_text(json.dumps(gpu_payload()))
    (tmp_path / "info_nce-gpu.json").write_text('{"benchmark": "info_nce", "cases": [')
    out = tmp_path / "REPORT.md"
    proc = run_report(tmp_path, "--out", out)
    assert proc.returncode == 1
    assert "info_nce-gpu.json" in proc.stderr and "not valid JSON" in proc.stderr
    assert "Source: `distance_weighted_negatives-gpu.json`" in out.read_text()


def test_empty_folder_is_not_an_error(tmp_path):
    proc = run_report(tmp_path, "--out", tmp_path / "REPORT.md")
    assert proc.returncode == 0
    assert "no benchmark results" in proc.stderr
    assert not (tmp_path / "REPORT.md").exists()


def test_smoke_files_in_a_folder_need_include_smoke(tmp_path):
    (tmp_path / "distance_weighted_negatives-smoke-cpu2.json").write_text(json.dumps(gpu_payload()))
    out = tmp_path / "REPORT.md"
    assert run_report(tmp_path, "--out", out).returncode == 0
    assert not out.exists()
    assert run_report(tmp_path, "--out", out, "--include-smoke").returncode == 0
    assert "smoke run" in out.read_text()


def test_missing_fields_and_foreign_json(tmp_path):
    payload = {"benchmark": "distance_weighted_negatives", "cases": [
        {"B": 64, "results": {"ours": {"median_s": 0.001}, "floor": {"median_s": 0.0005, "peak_bytes": 0}}},
        {"D": 16, "results": {}},  # no B: left out
    ]}
    (tmp_path / "partial.json").write_text(json.dumps(payload))
    (tmp_path / "history.json").write_text('{"epochs": []}')
    out = tmp_path / "REPORT.md"
    proc = run_report(tmp_path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "history.json: not a benchmark result" in proc.stderr
    assert "1 case(s) without a numeric B" in proc.stderr
    text, rows = parse_section(out.read_text(), "partial.json")
    assert "Machine:** not recorded" in text
    assert len(rows) == 1 and rows[0]["ours ms"] == "1.00" and rows[0]["ours MiB"] == "—"
    assert close(rows[0]["ours/floor"], 2.0)
