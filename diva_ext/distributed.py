"""torch.distributed for `diva train` under torchrun: joining the process group, the rank helpers,
and the collectives the trainer needs (docs/design.md §5).

Without torchrun's environment (``RANK``, ``WORLD_SIZE``, ...) or with one process, nothing is
initialised and every helper is the identity, so single-process code paths stay unchanged.

Semantics the trainer builds on: every rank all-gathers its embeddings and labels (in rank order,
so the gathered batch is the single-process global batch) and computes the *same* global loss on
them. ``all_gather_with_grad``'s backward is the exact adjoint of all-gather (the gradient of the
gathered tensor summed over ranks, then this rank's rows), so with DDP's averaging over ranks the
parameter gradients equal those of one process on the global batch.

What this means for DiVA's trainer (diva_ext.training.trainer): ``batch_size`` is the global
batch; each rank embeds its share, then gathers every head and label, so mining, the margin
losses, DaNCE and the decorrelation all see the global batch, identically on every rank (same
mining generator, same queue: the keys are gathered in rank order before they are enqueued).
DDP averages the model's gradients, the losses' own parameters (margin betas, decorrelation
MLPs) are averaged by ``average_gradients``, and the result is the single-process step on the
same global batch. BatchNorm: statistics of a training batch are per rank (each normalises its
own share) and running statistics are rank 0's (DDP broadcasts buffers); with frozen statistics
(resnet50 default, ``frozen_bn``) there is no difference at all. The momentum encoder stays
identical on every rank because its EMA follows parameters that DDP keeps identical.
Evaluation: each rank embeds a contiguous ``shard`` of the test set, ``all_gather_rows``
reassembles it in dataset order, rank 0 computes the metrics and ``broadcast_object`` shares them.
"""

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Tuple

import torch
import torch.distributed as dist

# Long enough for evaluation and checkpointing on rank 0 while the others wait in a collective;
# short enough that a hung peer ends the job instead of holding the machines forever.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, writes checkpoints, metrics and plots."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return current_world().is_main


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer (set by torchrun), got {text!r}") from None


def init_from_env(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Tuple[World, str]:
    """Join the process group torchrun describes, if any; returns (world, this rank's device).

    Backend: NCCL when ``device`` is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo on the
    CPU. ``timeout_s`` bounds every collective, so a dead or hung peer makes the job fail instead
    of hang. Multi-node jobs use torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``); this
    function only reads the variables it sets.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"dist-timeout must be a positive number of seconds, got {timeout_s!r}")
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return World(), device
    rank, size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ValueError(f"device cuda: local rank {local_rank} needs a GPU of its own, "
                             f"found {torch.cuda.device_count()}")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        backend = "nccl"
    elif kind == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"device {device!r}: distributed training runs on cpu (gloo) or cuda (nccl)")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    if dist.get_world_size() != size or dist.get_rank() != rank:
        raise ValueError(f"process group disagrees with RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local_rank), device


# gloo reports a dead or silent peer as a plain RuntimeError; these mark such messages.
_COMMUNICATION_MARKERS = ("gloo", "nccl", "timed out", "timeout", "pair closure", "connection closed",
                          "connection reset", "broken pipe")


def is_communication_error(err: BaseException) -> bool:
    """Whether ``err`` says a collective failed (a peer died, hung past the timeout, ...)."""
    if isinstance(err, dist.DistError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _COMMUNICATION_MARKERS)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors must live for the backend's collectives (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        parts[ctx.rank] = x  # bit-identical to the received copy; keeps the local rows exact
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # The adjoint of all-gather: other ranks' losses depend on our rows too. A copy, because
        # all_reduce writes in place and autograd may hold on to `grad`.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] per rank -> [world * n, ...], ranks in order, differentiable.

    Every rank must pass the same shape. Backward returns, for this rank's rows, the sum over
    ranks of the gradient of the gathered tensor (what ``torch.distributed.nn.functional
    .all_gather`` computes, with one all-reduce instead of a reduce-scatter, which gloo lacks).
    The identity in a single process.
    """
    if not current_world().is_distributed:
        return x
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] per rank -> [world * n, ...] in rank order, no gradient; same shape on every rank."""
    if not current_world().is_distributed:
        return x
    home = x.device
    x = x.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts).to(home)


@torch.no_grad()
def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Like all_gather, but ranks may hold different numbers of rows (e.g. evaluation shards)."""
    if not current_world().is_distributed:
        return x
    home, comm = x.device, _comm_device()
    counts = all_gather(torch.tensor([x.shape[0]], device=comm)).tolist()
    padded = torch.zeros((max(counts), *x.shape[1:]), dtype=x.dtype, device=comm)
    padded[: x.shape[0]] = x
    gathered = all_gather(padded)
    step = max(counts)
    return torch.cat([gathered[r * step:r * step + n] for r, n in enumerate(counts)]).to(home)


def shard(n: int) -> range:
    """This rank's contiguous share of ``range(n)`` (the first ranks take one more when uneven)."""
    world = current_world()
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


@torch.no_grad()
def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Average ``.grad`` over ranks in one all-reduce, for parameters outside DDP (the losses'
    own: margin betas, decorrelation MLPs). Every rank must hold gradients for the same ones."""
    world = current_world()
    if not world.is_distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_comm_device())
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if current_world().is_distributed:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable; small things such as metrics)."""
    if not current_world().is_distributed:
        return obj
    box: List[Any] = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


@torch.no_grad()
def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks (a new tensor on ``x``'s device); ``x`` itself in a single process."""
    if not current_world().is_distributed:
        return x
    total = x.detach().to(_comm_device()).clone()
    dist.all_reduce(total)
    return total.to(x.device)
