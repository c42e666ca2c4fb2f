"""Benchmark pairwise_distance: ours vs torch.cdist, the norm-expansion reference and
torch.compile of it, forward and forward+backward, with the floor (the GEMMs) timed beside.

    python bench/bench_pairwise_distance.py [--device cuda] [--smoke]

Floor: forward = one GEMM (x @ y^T); forward+backward = three GEMMs (x @ y^T, G @ y, G^T @ x).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import plotting  # noqa: E402

import diva_ext  # noqa: E402,F401
from diva_ext import ops, reference  # noqa: E402


def methods(device):
    compiled = torch.compile(reference.pairwise_distance)
    return {
        "ours": lambda x, y: ops.pairwise_distance(x, y),
        "torch.cdist": lambda x, y: torch.cdist(x, y),
        "reference": lambda x, y: reference.pairwise_distance(x, y),
        "compiled_reference": lambda x, y: compiled(x, y),
    }


def case_fns(fn, x, y, grad, mode):
    if mode == "forward":
        return lambda: fn(x, y)
    xg, yg = x.detach().requires_grad_(), y.detach().requires_grad_()

    def fwd_bwd():
        torch.autograd.grad(fn(xg, yg), (xg, yg), grad)

    return fwd_bwd


def floor_fn(x, y, grad, mode):
    if mode == "forward":
        return lambda: x @ y.t()

    def three_gemms():
        x @ y.t()
        grad @ y
        grad.t() @ x

    return three_gemms


def main():
    args = common.parser(__doc__).parse_args()
    device = torch.device(args.device)
    # GPU sizes: up to B = 8192, what bench/gpu_check.sh has time for within its default budget.
    sizes = [64] if args.smoke else ([1024, 4096, 8192] if device.type == "cuda" else [1024, 4096])
    dims = [32] if args.smoke else [128, 512]
    min_run_time = 0.05 if args.smoke else args.min_run_time
    fns = methods(device)
    rows, records = [], []
    for d in dims:
        for b in sizes:
            g = torch.Generator(device="cpu").manual_seed(b + d)
            x = torch.randn(b, d, generator=g).to(device)
            y = torch.randn(b, d, generator=g).to(device)
            grad = torch.randn(b, b, generator=g).to(device)
            for mode in ("forward", "forward+backward"):
                cases = {"floor": floor_fn(x, y, grad, mode)}
                cases.update({name: case_fns(fn, x, y, grad, mode) for name, fn in fns.items()})
                results = common.measure_all(cases, device, min_run_time)
                records.append({"B": b, "D": d, "mode": mode, "results": results})
                row = {"B": b, "D": d, "mode": mode}
                for name, r in results.items():
                    row[f"{name} ms"] = common.fmt_ms(r)
                row["ours MiB"] = common.fmt_mib(results["ours"])
                row["cdist MiB"] = common.fmt_mib(results["torch.cdist"])
                row["cdist/ours"] = common.ratio(results["ours"], results["torch.cdist"])
                row["ours/floor"] = common.ratio(results["floor"], results["ours"])
                rows.append(row)
                print(f"B={b} D={d} {mode}: done", file=sys.stderr)
    common.print_table(rows, list(rows[0].keys()))
    out = args.out or common.default_out("pairwise_distance" + ("-smoke" if args.smoke else ""), device)
    payload = {"benchmark": "pairwise_distance", "machine": common.machine_info(device), "cases": records}
    common.write_results(out, payload)
    plotting.plot_cases(payload, out.with_suffix(".png"), x_key="B", group_keys=("D", "mode"))


if __name__ == "__main__":
    main()
