"""Benchmark distance_weighted_negatives (distance-weighted negative mining): ours vs
pytorch-metric-learning's DistanceWeightedMiner vs the vectorised PyTorch sampler
(diva_ext.reference) and torch.compile of it, with the floor (the T x B x D GEMM of the inner
products) timed beside.

    python bench/bench_distance_weighted_negatives.py [--device cuda] [--smoke]

Every method draws one distance-weighted negative per anchor for a batch of B L2-normalised
rows with 2 rows per class (DiVA's batches), T = B anchors, lower_cutoff 0.5 and upper_cutoff
1.4 (PML's defaults). `ours` is the fused op (diva_ext.ops.distance_weighted_negatives);
`ours_miner` the whole DistanceWeightedMiner (positives, normalisation, the op). PML mines one
negative per (anchor, positive) pair, which with 2 rows per class is also one per anchor; its
sampling loops over anchors in Python, so it is skipped where one call would take more than
about 20-30 s (the table says so).
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import plotting  # noqa: E402

import diva_ext  # noqa: E402,F401
from diva_ext import miners, ops, reference  # noqa: E402

LOWER, UPPER = 0.5, 1.4
PML_LIMIT_S = 30.0  # "about 20 s": keeps B = 2048 (measured at 18 s on an idle machine)


def methods():
    compiled = torch.compile(reference.distance_weighted_negatives)
    kw = dict(lower_cutoff=LOWER, upper_cutoff=UPPER)
    ours_miner = miners.DistanceWeightedMiner(LOWER, UPPER, positives="one")
    fns = {
        "ours": lambda x, labels, anchors: ops.distance_weighted_negatives(x, labels, anchors, **kw),
        "ours_miner": lambda x, labels, anchors: ours_miner(x, labels),
        "reference": lambda x, labels, anchors: reference.distance_weighted_negatives(x, labels, anchors, **kw),
        "compiled_reference": lambda x, labels, anchors: compiled(x, labels, anchors, **kw),
    }
    try:
        from pytorch_metric_learning.miners import DistanceWeightedMiner as PmlMiner
    except ImportError:
        return fns
    pml = PmlMiner(cutoff=LOWER, nonzero_loss_cutoff=UPPER)
    fns["pml"] = lambda x, labels, anchors: pml(x, labels)
    return fns


def measure_pml(fn, device, min_run_time, predicted_s):
    """PML: skipped when predicted slow; one timed call decides whether to repeat."""
    if predicted_s is not None and predicted_s > PML_LIMIT_S:
        return {"error": f"skipped: one call would take about {predicted_s:.0f} s (> {PML_LIMIT_S:.0f} s)"}
    start = time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    once = time.perf_counter() - start
    if once * 3 > min_run_time:  # too slow to repeat: the single call is the figure
        return {"median_s": once, "iqr_s": 0.0, "runs": 1, "peak_bytes": common.peak_memory_bytes(fn, device)}
    return common.measure(fn, device, min_run_time)


def main():
    args = common.parser(__doc__).parse_args()
    device = torch.device(args.device)
    if args.smoke:
        sizes, dims = [64], [16]
    else:
        # 2048: the largest size PML is timed at on a CPU (about 18 s a call, see PML_LIMIT_S).
        sizes = [256, 1024, 2048, 4096] + ([8192] if device.type == "cuda" else [])
        dims = [128, 512]
    min_run_time = 0.05 if args.smoke else args.min_run_time
    fns = methods()
    rows, records = [], []
    for d in dims:
        pml_seconds = None  # PML's time at the previous size, to predict the next (O(B^2))
        prev_b = None
        for b in sizes:
            g = torch.Generator(device="cpu").manual_seed(b + d)
            x = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).to(device)
            labels = torch.arange(b // 2).repeat_interleave(2)[torch.randperm(b, generator=g)].to(device)
            anchors = torch.arange(b, device=device)
            # PML (slow, often a single call) on its own; the rest timed interleaved.
            cases = {"floor": lambda: x @ x.t()}
            cases.update({name: (lambda fn=fn: fn(x, labels, anchors)) for name, fn in fns.items() if name != "pml"})
            results = common.measure_all(cases, device, min_run_time)
            if "pml" in fns:
                predicted = pml_seconds * (b / prev_b) ** 2 if pml_seconds else None
                results["pml"] = measure_pml(lambda: fns["pml"](x, labels, anchors), device, min_run_time, predicted)
                pml_seconds = results["pml"].get("median_s", predicted)
            prev_b = b
            records.append({"B": b, "D": d, "T": b, "results": results})
            row = {"B": b, "D": d}
            row.update(common.time_columns(results))
            row["ours MiB"] = common.fmt_mib(results["ours"])
            row["ref MiB"] = common.fmt_mib(results["reference"])
            row["ref/ours"] = common.ratio(results["ours"], results["reference"])
            row["compiled/ours"] = common.ratio(results["ours"], results["compiled_reference"])
            if "pml" in results:
                row["pml/ours"] = common.ratio(results["ours"], results["pml"])
            row["ours/floor"] = common.ratio(results["floor"], results["ours"])
            rows.append(row)
            print(f"B={b} D={d}: done", file=sys.stderr)
    common.print_table(rows, list(rows[0].keys()))
    skipped = [f"B={r['B']} D={r['D']}" for r in rows if r.get("pml ms") == "skipped"]
    if skipped:
        print(f"pml skipped (> {PML_LIMIT_S:.0f} s per call predicted) at: {', '.join(skipped)}")
    out = args.out or common.default_out("distance_weighted_negatives" + ("-smoke" if args.smoke else ""), device)
    payload = {
        "benchmark": "distance_weighted_negatives",
        "machine": common.machine_info(device),
        "settings": {"lower_cutoff": LOWER, "upper_cutoff": UPPER, "samples_per_class": 2, "T": "B"},
        "cases": records,
    }
    common.write_results(out, payload)
    plotting.plot_cases(payload, out.with_suffix(".png"), x_key="B", group_keys=("D",))


if __name__ == "__main__":
    main()
