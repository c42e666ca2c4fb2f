"""Benchmark supervised_info_nce (SupCon against a labelled memory, e.g. a cross-batch memory):
ours vs the naive SupCon code (explicit [B, K] logits and positive mask), torch.compile of it, and
pytorch-metric-learning's SupConLoss + CrossBatchMemory, forward+backward, with the floor beside.

    python bench/bench_supervised_info_nce.py [--device cuda] [--smoke] [--modes detached,memory_grad]

Modes:
  detached     q needs a gradient, the memory does not (a memory of past embeddings). Floor: the
               two GEMMs that cannot be avoided, S = q memory^T [B, K] and P memory [B, D].
  memory_grad  the memory needs a gradient too (in-batch use). Floor: three GEMMs, S, P memory
               and P^T q [K, D].
Every method runs loss.mean() and its backward, T = 0.07, L2-normalised rows, labels drawn from
CLASSES classes (every query has positives). PML's CrossBatchMemory holds the K memory rows and
gets the queries with an all-False enqueue_mask (queries against the memory, none enqueued: the
same objective up to its reducer, the mean over rows with a nonzero loss); it builds all
(query, memory) pair indices, so it is skipped above PML_MAX_PAIRS pairs (the table says so) and
runs in the detached mode only.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diva_ext  # noqa: E402,F401
from diva_ext import ops, reference  # noqa: E402

TEMPERATURE = 0.07
CLASSES = 100
PML_MAX_PAIRS = 2**23  # 8M (query, memory) pairs


def naive(q, labels, memory, memory_labels):
    """The usual SupCon code: explicit [B, K] logits and positive mask (diva_ext.reference)."""
    loss, _ = reference.supervised_info_nce(q, labels, memory, memory_labels, temperature=TEMPERATURE)
    return loss.mean()


def ours(q, labels, memory, memory_labels):
    loss, _ = ops.supervised_info_nce(q, labels, memory, memory_labels, temperature=TEMPERATURE)
    return loss.mean()


def methods():
    return {"ours": ours, "naive": naive, "compiled_naive": torch.compile(naive)}


def pml_case(memory, memory_labels):
    try:
        from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss
    except ImportError:
        return None
    k, d = memory.shape
    loss_fn = CrossBatchMemory(SupConLoss(temperature=TEMPERATURE), d, memory_size=k).to(memory.device)

    def call(q, labels, _memory, _memory_labels):
        loss_fn.embedding_memory.copy_(memory)
        loss_fn.label_memory.copy_(memory_labels)
        loss_fn.queue_idx, loss_fn.has_been_filled = 0, True
        enqueue = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
        return loss_fn(q, labels, enqueue_mask=enqueue)

    return call


def fwd_bwd(fn, q, labels, memory, memory_labels, mode):
    qg = q.detach().requires_grad_()
    mg = memory.detach().requires_grad_(mode == "memory_grad")
    inputs = [qg] + ([mg] if mode == "memory_grad" else [])

    def run():
        torch.autograd.grad(fn(qg, labels, mg, memory_labels), inputs)

    return run


def main():
    p = common.parser(__doc__)
    p.add_argument("--modes", default="detached,memory_grad", help="comma-separated: detached, memory_grad")
    p.add_argument("--sizes", default=None, help="comma-separated B values (default 256,1024,4096)")
    p.add_argument("--dims", default=None, help="comma-separated D values (default 128,512)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.smoke:
        sizes, dims, k = [32], [16], 300
    else:
        sizes, dims, k = [256, 1024, 4096], [128, 512], 65536
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    if args.dims:
        dims = [int(v) for v in args.dims.split(",")]
    modes = args.modes.split(",")
    min_run_time = 0.05 if args.smoke else args.min_run_time
    fns = methods()
    rows, records = [], []
    for mode in modes:
        for d in dims:
            for b in sizes:
                g = torch.Generator(device="cpu").manual_seed(b + d)
                centres = F.normalize(torch.randn(CLASSES, d, generator=g), dim=1)
                labels = torch.randint(0, CLASSES, (b,), generator=g)
                memory_labels = torch.randint(0, CLASSES, (k,), generator=g)
                q = F.normalize(centres[labels] + 0.5 * torch.randn(b, d, generator=g), dim=1).to(device)
                memory = F.normalize(centres[memory_labels] + 0.5 * torch.randn(k, d, generator=g), dim=1).to(device)
                labels, memory_labels = labels.to(device), memory_labels.to(device)
                case = (q, labels, memory, memory_labels)
                cases = {"floor": common.gemm_floor(q, memory, keys_grad=mode == "memory_grad")}
                cases.update({name: fwd_bwd(fn, *case, mode) for name, fn in fns.items()})
                results = common.measure_all(cases, device, min_run_time)
                if mode == "detached":
                    results["pml"] = common.peer_result(
                        pml_case(memory, memory_labels), lambda pml: fwd_bwd(pml, *case, mode), b * k,
                        PML_MAX_PAIRS, device, min_run_time)
                records.append({"mode": mode, "B": b, "K": k, "D": d, "results": results})
                rows.append(common.fused_loss_row(mode, b, d, results))
                print(f"{mode} B={b} D={d}: done", file=sys.stderr)
    out = args.out or common.default_out("supervised_info_nce" + ("-smoke" if args.smoke else ""), device)
    payload = {
        "benchmark": "supervised_info_nce",
        "machine": common.machine_info(device),
        "settings": {"K": k, "temperature": TEMPERATURE, "classes": CLASSES, "objective": "loss.mean()"},
        "cases": records,
    }
    common.publish(rows, payload, out, group_keys=("mode", "D"))


if __name__ == "__main__":
    main()
