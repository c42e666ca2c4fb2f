"""Shared benchmark helpers: timing (torch.utils.benchmark), peak memory, machine facts, output.

Timing: median of torch.utils.benchmark's blocked measurements (it synchronises CUDA). Methods
of one case are timed interleaved (measure_all): several rounds, each timing every method in
turn, so that a change of machine load between methods shifts all of them alike; the figure of a
method is the median over rounds of its per-round median.
Peak memory: on CUDA the caching allocator's peak above what was allocated before the call; on
the CPU the process's peak resident set above its level before the call (VmHWM after resetting
it through /proc/self/clear_refs). run_all.py starts each benchmark with a fixed glibc mmap
threshold so that large buffers are returned to the system when freed, which makes the CPU
figure the peak of the call itself, not of earlier calls.
"""

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info(device):
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        # Other work on the machine skews CPU timings; record how busy it was at the start.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_fn(fn, min_run_time=1.0):
    """Median seconds per call of fn() over torch.utils.benchmark's blocked measurements."""
    fn()  # warm-up: compilation, allocator, caches
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_s": m.median, "iqr_s": m.iqr, "runs": len(m.times)}


def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_bytes(fn, device):
    """Peak memory fn() needs beyond what is held before the call, in bytes."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    fn()
    return max(0, _rss_kib("VmHWM") - base) * 1024


def measure(fn, device, min_run_time):
    """Time and peak memory of fn, or the error it raised (e.g. out of memory)."""
    try:
        result = time_fn(fn, min_run_time)
        result["peak_bytes"] = peak_memory_bytes(fn, device)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        return _error(err, device)
    return result


ROUNDS = 5


def measure_all(fns, device, min_run_time, rounds=ROUNDS):
    """{name: measure-like result} for {name: fn}, timed interleaved over `rounds` rounds of
    min_run_time / rounds seconds per method each. A method that raises gets {"error": ...}
    and leaves the rounds."""
    results, live = {}, {}
    for name, fn in fns.items():
        try:
            fn()  # warm-up: compilation, allocator, caches
            live[name] = (fn, [])
        except (RuntimeError, torch.OutOfMemoryError) as err:
            results[name] = _error(err, device)
    for _ in range(rounds):
        for name, (fn, medians) in list(live.items()):
            try:
                m = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time / rounds)
                medians.append(m.median)
            except (RuntimeError, torch.OutOfMemoryError) as err:
                results[name] = _error(err, device)
                del live[name]
    for name, (fn, medians) in live.items():
        try:
            peak = peak_memory_bytes(fn, device)
        except (RuntimeError, torch.OutOfMemoryError) as err:
            results[name] = _error(err, device)
            continue
        spread = statistics.quantiles(medians, n=4) if len(medians) > 1 else [medians[0]] * 3
        results[name] = {"median_s": statistics.median(medians), "iqr_s": spread[2] - spread[0],
                         "runs": len(medians), "round_medians_s": medians, "peak_bytes": peak}
    return {name: results[name] for name in fns}


def _error(err, device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return {"error": str(err).splitlines()[0][:200]}


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one quick measurement (CI)")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per case")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    return p


def default_out(name, device):
    if torch.device(device).type == "cuda":
        tag = torch.cuda.get_device_name(device).replace(" ", "_")
    else:
        tag = f"cpu{torch.get_num_threads()}"
    return RESULTS_DIR / f"{name}-{tag}.json"


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def write_results(path, payload):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)


def publish(rows, payload, out, group_keys):
    """Prints the table of rows (columns in first-seen order), writes payload as JSON at out and
    its plot (time and memory against B, one line per group_keys value) beside it as PNG."""
    import plotting  # matplotlib, loaded only by the benchmarks that publish

    columns = list(dict.fromkeys(c for r in rows for c in r))
    print_table(rows, columns)
    write_results(out, payload)
    plotting.plot_cases(payload, Path(out).with_suffix(".png"), x_key="B", group_keys=group_keys)


def fmt_ms(result):
    return "error" if "error" in result else f"{1e3 * result['median_s']:.2f}"


def time_columns(results):
    """{"<method> ms": formatted time} for a case's results; "skipped" for a skipped method."""
    return {f"{name} ms": "skipped" if "skipped" in r.get("error", "") else fmt_ms(r) for name, r in results.items()}


def fmt_mib(result):
    return "" if "error" in result else f"{result['peak_bytes'] / 2**20:.1f}"


def ratio(a, b):
    """b's time over a's: the median of per-round ratios when both were timed interleaved."""
    if "error" in a or "error" in b:
        return None
    ra, rb = a.get("round_medians_s"), b.get("round_medians_s")
    if ra and rb and len(ra) == len(rb):
        return round(statistics.median(y / x for x, y in zip(ra, rb)), 3)
    return round(b["median_s"] / a["median_s"], 3)


def gemm_floor(q, keys, keys_grad):
    """The products a fused contrastive loss of q [B, D] against keys [K, D] cannot avoid: S = q
    keys^T and P keys (O, q's gradient), and P^T q when the keys need a gradient too."""
    def gemms():
        s = q @ keys.t()
        s @ keys
        if keys_grad:
            s.t() @ q

    return gemms


def peer_result(peer, timed, pairs, max_pairs, device, min_run_time, size_note=""):
    """The optional pytorch-metric-learning peer's result: an error entry when it is not
    installed (peer is None) or when the case has more than max_pairs pairs for it; otherwise
    timed(peer) measured."""
    if peer is None:
        return {"error": "pytorch-metric-learning is not installed"}
    if pairs > max_pairs:
        return {"error": f"skipped: {pairs} pairs > {max_pairs}{size_note}"}
    return measure(timed(peer), device, min_run_time)


def fused_loss_row(mode, b, d, results):
    """A fused contrastive loss's table row: the case, its times and its versus-naive columns."""
    return {"mode": mode, "B": b, "D": d, **time_columns(results), **versus_naive_columns(results)}


def versus_naive_columns(results):
    """The comparison columns of a fused loss's table row from results with "ours", "naive",
    "compiled_naive" and "floor": peak MiB, time ratios to ours (interleaved rounds), peak memory
    naive/ours, and ours over the floor."""
    ours, naive = results["ours"], results["naive"]
    row = {"ours MiB": fmt_mib(ours), "naive MiB": fmt_mib(naive), "naive/ours": ratio(ours, naive),
           "compiled/ours": ratio(ours, results["compiled_naive"])}
    if "error" not in ours and "error" not in naive and ours["peak_bytes"] > 0:
        row["mem naive/ours"] = round(naive["peak_bytes"] / ours["peak_bytes"], 1)
    row["ours/floor"] = ratio(results["floor"], ours)
    return row


def median(values):
    return statistics.median(values)
