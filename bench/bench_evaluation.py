"""Benchmark evaluation: the torch backend (ours) vs faiss, recall@k + MAP@R and NMI, with the
floor (the GEMMs the stage cannot avoid) timed beside.

    python bench/bench_evaluation.py [--device cuda] [--smoke] [--sizes 60502] [--rounds 3]
        [--modes recall+map@r nmi] [--methods floor ours faiss] [--kmeans-iters 20] [--isolate]
        [--note TEXT]

SOP's full test size on a CPU (one kNN call is ~3.7 TFLOP, one k-means assignment ~0.7 TFLOP):
    python bench/bench_evaluation.py --sizes 60502 --rounds 1 --kmeans-iters 2 --isolate \
        --out bench/results/evaluation-sop-cpu2.json

Data like SOP's test split: N unit-norm D = 512 float32 rows, N / 5.35 classes (SOP: 60502 rows,
11316 classes), each row its class's random unit centre plus isotropic noise (NOISE), renormalised,
so that recall and NMI are neither 0 nor 1. Stages:
- ``recall+map@r``: evaluate(nmi=False) with recall_at (1, 10, 100, 1000), SOP's protocol
  (k = 1000 neighbours per query, capped at N - 1). Floor: the N x N x D GEMM, in the same chunks.
- ``nmi``: kmeans_assignments with k = number of classes, --kmeans-iters Lloyd iterations (20;
  the same budget for both backends, stored in the JSON), then NMI. Both backends start from the
  same torch k-means++ centres, so the call times of ours and faiss share that cost. Floor: the
  iters + 1 N x k x D assignment GEMMs (the iterations and the final assignment).

Timing: each round times every method once (interleaved, so that load drift on a shared machine
shifts them alike); the figure is the median over rounds, and the peak memory is measured in the
same calls (common.peak_memory_bytes). One untimed warm-up per method at the smallest size. The
metrics each backend returned are stored beside its times (they should agree).
--isolate runs every timed call in a fresh subprocess (its own data, warm-up and peak), so that
one backend's peak is not raised or hidden by what another left allocated; the rounds still
interleave the methods.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diva_ext  # noqa: E402,F401
from diva_ext.evaluation import evaluate, faiss_available, kmeans_assignments, nmi_score  # noqa: E402
from diva_ext.evaluation.knn_torch import default_chunk_size, full_float32_matmul  # noqa: E402

SOP_ROWS, SOP_CLASSES = 60502, 11316
RECALL_AT = (1, 10, 100, 1000)
KMEANS_ITERS = 20
# Per-coordinate noise around the unit class centres: recall@1 ~0.98 at N = 4096, D = 512 (0.07:
# 1.0, 0.11: 0.77; measured), so that neither backend's metrics sit at a trivial 1.
NOISE = 0.09
METHODS = ("floor", "ours", "faiss")


def sop_like(n, dim, device, seed=0):
    """Unit rows around random unit class centres, N / 5.35 classes (SOP's rows per class)."""
    g = torch.Generator().manual_seed(seed)
    classes = max(2, round(n * SOP_CLASSES / SOP_ROWS))
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    x = F.normalize(centres[labels] + NOISE * torch.randn(n, dim, generator=g), dim=1)
    return x.to(device), labels.to(device), int(labels.unique().numel())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def knn_floor(x):
    """The N x N x D GEMM of the kNN, in the torch backend's chunks."""
    chunk = default_chunk_size(x.shape[0])
    with full_float32_matmul():
        for start in range(0, x.shape[0], chunk):
            x[start : start + chunk] @ x.t()


def kmeans_floor(x, k, iters):
    """iters + 1 assignment GEMMs N x k x D against k fixed rows."""
    centroids = x[:k]
    rows = max(1, (256 << 20) // (8 * k))
    with full_float32_matmul():
        for _ in range(iters + 1):
            for start in range(0, x.shape[0], rows):
                x[start : start + rows] @ centroids.t()


def stage_fns(mode, x, labels, classes, recall_at, kmeans_iters):
    """{method: fn returning the metrics dict (or None for the floor)} for one stage."""
    backends = {"ours": "torch", "faiss": "faiss"}
    if mode == "recall+map@r":
        fns = {"floor": lambda: knn_floor(x)}
        for name, backend in backends.items():
            fns[name] = lambda backend=backend: evaluate(x, labels, recall_at, nmi=False, backend=backend, progress=False)
        return fns
    labels_cpu = labels.cpu().numpy()

    def nmi(backend):
        clusters = kmeans_assignments(x, classes, niter=kmeans_iters, backend=backend, progress=False)
        return {"nmi": nmi_score(labels_cpu, clusters)}

    fns = {"floor": lambda: kmeans_floor(x, classes, kmeans_iters)}
    fns.update({name: lambda backend=backend: nmi(backend) for name, backend in backends.items()})
    return fns


def timed_call(fn, device):
    """{"seconds", "peak_bytes", "metrics"} of one call of fn."""
    out = {}

    def call():
        sync(device)
        start = time.perf_counter()
        out["metrics"] = fn()
        sync(device)
        out["seconds"] = time.perf_counter() - start

    out["peak_bytes"] = common.peak_memory_bytes(call, device)
    return out


def warm_up(mode, name, dim, device, kmeans_iters):
    """One untimed call of the method at a small size (allocator, thread pools, faiss import)."""
    small_x, small_labels, small_classes = sop_like(256, dim, device, seed=1)
    try:
        stage_fns(mode, small_x, small_labels, small_classes, (1, 10), kmeans_iters)[name]()
    except (RuntimeError, ValueError):
        pass  # measured (and reported) below


def isolated_call(mode, name, n, args):
    """timed_call of one method in a fresh interpreter (this script with --one); RuntimeError
    with the child's last lines when it fails."""
    cmd = [sys.executable, __file__, "--one", mode, name, "--sizes", str(n), "--device", args.device,
           "--kmeans-iters", str(args.kmeans_iters)] + (["--smoke"] if args.smoke else [])
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    if done.returncode != 0:
        raise RuntimeError(f"{name} subprocess exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_interleaved(calls, device, rounds):
    """{name: result}: per-round time and peak memory of one call each, methods interleaved;
    calls: {name: () -> timed_call's dict}."""
    times = {name: [] for name in calls}
    peaks, metrics, results = {name: [] for name in calls}, {}, {}
    for _ in range(rounds):
        for name, call in calls.items():
            if name in results:  # failed or skipped earlier
                continue
            try:
                out = call()
            except (RuntimeError, ValueError, torch.OutOfMemoryError) as err:
                results[name] = common._error(err, device)
                continue
            peaks[name].append(out["peak_bytes"])
            times[name].append(out["seconds"])
            if out["metrics"] is not None:
                metrics[name] = out["metrics"]
    for name in calls:
        if name in results:
            continue
        spread = statistics.quantiles(times[name], n=4) if len(times[name]) > 1 else [times[name][0]] * 3
        results[name] = {"median_s": statistics.median(times[name]), "iqr_s": spread[2] - spread[0],
                         "runs": len(times[name]), "round_medians_s": times[name], "peak_bytes": max(peaks[name])}
        if name in metrics:
            results[name]["metrics"] = metrics[name]
    return {name: results[name] for name in calls}


def run_one(args, dim):
    """--one MODE METHOD: warm up, time one call at --sizes' single N, print timed_call's JSON."""
    mode, name = args.one
    device = torch.device(args.device)
    x, labels, classes = sop_like(args.sizes[0], dim, device)
    warm_up(mode, name, dim, device, args.kmeans_iters)
    recall_at = tuple(k for k in RECALL_AT if k < x.shape[0]) or (1,)
    print(json.dumps(timed_call(stage_fns(mode, x, labels, classes, recall_at, args.kmeans_iters)[name], device)))


def main():
    p = common.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"N values (default: CPU 2048 4096 8192; CUDA 8192 16384 {SOP_ROWS}, SOP's size)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one call per method each)")
    p.add_argument("--modes", nargs="+", default=["recall+map@r", "nmi"], choices=["recall+map@r", "nmi"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="what to time (default all; at SOP size on a CPU each call takes minutes)")
    p.add_argument("--kmeans-iters", type=int, default=KMEANS_ITERS,
                   help="Lloyd iterations of the nmi stage, the same for both backends")
    p.add_argument("--isolate", action="store_true",
                   help="each timed call in its own subprocess (own peak memory; needs no warm state)")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else loaded the machine)")
    p.add_argument("--one", nargs=2, metavar=("MODE", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.kmeans_iters < 1:
        p.error(f"--kmeans-iters must be >= 1, got {args.kmeans_iters}")
    dim = 32 if args.smoke else 512
    if args.one:
        run_one(args, dim)
        return
    load_at_start = list(os.getloadavg())
    device = torch.device(args.device)
    if args.smoke:
        sizes, rounds = [300], 1
    else:
        sizes = args.sizes or ([8192, 16384, SOP_ROWS] if device.type == "cuda" else [2048, 4096, 8192])
        rounds = args.rounds
    if not faiss_available():
        print("faiss not installed: only the torch backend and the floor are timed", file=sys.stderr)
    rows, records = [], []
    warm = set()
    for n in sorted(sizes):
        x, labels, classes = sop_like(n, dim, device)
        recall_at = tuple(k for k in RECALL_AT if k < n) or (1,)
        for mode in args.modes:
            fns = stage_fns(mode, x, labels, classes, recall_at, args.kmeans_iters)
            if not faiss_available():
                fns["faiss"] = None
            skipped = {name: "skipped: not in --methods" for name in fns if name not in args.methods}
            fns = {name: (None if name in skipped else fn) for name, fn in fns.items()}
            live = {name: fn for name, fn in fns.items() if fn is not None}
            if args.isolate:
                calls = {name: lambda name=name: isolated_call(mode, name, n, args) for name in live}
            else:
                for name in live:
                    if (mode, name) not in warm:
                        warm_up(mode, name, dim, device, args.kmeans_iters)
                        warm.add((mode, name))
                calls = {name: lambda fn=fn: timed_call(fn, device) for name, fn in live.items()}
            results = measure_interleaved(calls, device, rounds)
            if fns.get("faiss") is None and "faiss" not in skipped:
                results["faiss"] = {"error": "skipped: faiss not installed"}
            results.update({name: {"error": why} for name, why in skipped.items()})
            records.append({"B": n, "N": n, "mode": mode, "results": results})
            row = {"N": n, "classes": classes, "mode": mode, **common.time_columns(results),
                   "ours MiB": common.fmt_mib(results["ours"]), "faiss MiB": common.fmt_mib(results["faiss"]),
                   "faiss/ours": common.ratio(results["ours"], results["faiss"]),
                   "ours/floor": common.ratio(results["floor"], results["ours"])}
            for name in ("ours", "faiss"):
                for key, value in results[name].get("metrics", {}).items():
                    row[f"{name} {key}"] = f"{value:.4f}"
            rows.append(row)
            print(f"N={n} {mode}: done", file=sys.stderr)
    out = args.out or common.default_out("evaluation" + ("-smoke" if args.smoke else ""), device)
    payload = {
        "benchmark": "evaluation",
        "machine": common.machine_info(device),
        "settings": {"D": dim, "rows_per_class": round(SOP_ROWS / SOP_CLASSES, 2), "recall_at": list(RECALL_AT),
                     "kmeans_iters": args.kmeans_iters, "noise": NOISE, "rounds": rounds, "faiss": faiss_available(),
                     "kmeans_init": "the same torch k-means++ for both backends, inside the timed call",
                     "isolated_calls": args.isolate},
        # On a shared machine the absolute times depend on what else ran; the ratios less so.
        "load_average_1_5_15_min": {"start": load_at_start, "end": list(os.getloadavg()),
                                    "cpus": os.cpu_count()},
        "cases": records,
    }
    if args.note:
        payload["note"] = args.note
    common.publish(rows, payload, out, group_keys=("mode",))


if __name__ == "__main__":
    main()
