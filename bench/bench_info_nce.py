"""Benchmark info_nce (MoCo's InfoNCE against a memory queue): ours vs the naive MoCo code
(einsum + cat + cross_entropy), torch.compile of it, and pytorch-metric-learning's
NTXentLoss + CrossBatchMemory, forward+backward, with the floor timed beside.

    python bench/bench_info_nce.py [--device cuda] [--smoke] [--modes moco,queue_grad]

Modes:
  moco        q and k need gradients, the queue does not (MoCo, DiVA's DaNCE). Floor: the two
              GEMMs that cannot be avoided, S = q queue^T [B, K] and P queue [B, D].
  queue_grad  the queue needs a gradient too (in-batch use). Floor: three GEMMs, S, P queue and
              P^T q [K, D].
Every method runs loss.mean() and its backward, weighting "none", T = 0.07, L2-normalised rows.
PML's CrossBatchMemory (memory of K + B rows, the current keys enqueued first, as in its MoCo
recipe) is comparable only in the moco mode; it takes ~512 bytes per (query, memory) pair (its
2B queries, q and k, against K + B memory rows: B = 256, K = 65536 asked for 17 GB on the CPU),
so it is skipped above PML_MAX_PAIRS pairs (the table says so).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diva_ext  # noqa: E402,F401
from diva_ext import ops  # noqa: E402

TEMPERATURE = 0.07
PML_MAX_PAIRS = 2**23  # 8M (query, memory) pairs, ~4 GiB for PML


def naive_moco(q, k, queue):
    """MoCo's published loss: explicit [B, K+1] logits."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / TEMPERATURE
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def ours(q, k, queue):
    loss, _ = ops.info_nce(q, k, queue, temperature=TEMPERATURE)
    return loss.mean()


def methods():
    return {"ours": ours, "naive": naive_moco, "compiled_naive": torch.compile(naive_moco)}


def pml_case(q, k, queue):
    """PML's MoCo setup: the keys join a CrossBatchMemory already holding the queue."""
    try:
        from pytorch_metric_learning.losses import CrossBatchMemory, NTXentLoss
    except ImportError:
        return None
    b, d = q.shape
    kq = queue.shape[0]
    loss_fn = CrossBatchMemory(NTXentLoss(temperature=TEMPERATURE), d, memory_size=kq + b).to(q.device)
    labels = torch.arange(b, device=q.device)
    both = torch.cat([labels, labels])
    enqueue = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(q.device)

    def reset():
        loss_fn.embedding_memory[:kq] = queue
        loss_fn.label_memory[:kq] = torch.arange(b, b + kq, device=q.device)
        loss_fn.queue_idx = kq
        loss_fn.has_been_filled = False

    def call(qq, kk, _queue):
        reset()
        return loss_fn(torch.cat([qq, kk]), both, enqueue_mask=enqueue)

    return call


def fwd_bwd(fn, q, k, queue, mode):
    qg, kg = q.detach().requires_grad_(), k.detach().requires_grad_()
    qu = queue.detach().requires_grad_(mode == "queue_grad")
    inputs = [qg, kg] + ([qu] if mode == "queue_grad" else [])

    def run():
        torch.autograd.grad(fn(qg, kg, qu), inputs)

    return run


def main():
    p = common.parser(__doc__)
    p.add_argument("--modes", default="moco,queue_grad", help="comma-separated: moco, queue_grad")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.smoke:
        sizes, dims, kq = [32], [16], 300
    else:
        sizes, dims, kq = [256, 1024, 4096] + ([8192] if device.type == "cuda" else []), [128, 512], 65536
    modes = args.modes.split(",")
    min_run_time = 0.05 if args.smoke else args.min_run_time
    fns = methods()
    rows, records = [], []
    for mode in modes:
        for d in dims:
            for b in sizes:
                g = torch.Generator(device="cpu").manual_seed(b + d)
                q = F.normalize(torch.randn(b, d, generator=g), dim=1).to(device)
                k = F.normalize(q.cpu() + 0.5 * torch.randn(b, d, generator=g), dim=1).to(device)
                queue = F.normalize(torch.randn(kq, d, generator=g), dim=1).to(device)
                cases = {"floor": common.gemm_floor(q, queue, keys_grad=mode == "queue_grad")}
                cases.update({name: fwd_bwd(fn, q, k, queue, mode) for name, fn in fns.items()})
                results = common.measure_all(cases, device, min_run_time)
                if mode == "moco":
                    results["pml"] = common.peer_result(
                        pml_case(q, k, queue), lambda pml: fwd_bwd(pml, q, k, queue, mode), 2 * b * (kq + b),
                        PML_MAX_PAIRS, device, min_run_time, size_note=" (~512 bytes each)")
                records.append({"mode": mode, "B": b, "K": kq, "D": d, "results": results})
                rows.append(common.fused_loss_row(mode, b, d, results))
                print(f"{mode} B={b} D={d}: done", file=sys.stderr)
    out = args.out or common.default_out("info_nce" + ("-smoke" if args.smoke else ""), device)
    payload = {
        "benchmark": "info_nce",
        "machine": common.machine_info(device),
        "settings": {"K": kq, "temperature": TEMPERATURE, "weighting": "none", "objective": "loss.mean()"},
        "cases": records,
    }
    common.publish(rows, payload, out, group_keys=("mode", "D"))


if __name__ == "__main__":
    main()
