"""Distributed training on the CPU (gloo, 2 processes): the same run as one process on the same
global batch, mining across ranks, only rank 0 writing, and a dead or hung rank failing the job
within a bounded time instead of hanging it.

The comparison is exact. The single process runs the model (and the momentum encoder) on the two
halves of each batch, as the two ranks do (distributed_worker's forward_parts), so every float32
operation sees the same operands in the same order as on the ranks: the forward passes, the losses
on the gathered batch (one thread each, deterministic kernels), and the backward. The gradients
then agree bit for bit: all_gather_with_grad's backward sums two identical gradients (x + x = 2x,
exact), backprop is linear (a factor 2 passes through every rounding exactly), DDP and
average_gradients add the two ranks' parts (a + b is commutative in IEEE arithmetic, whichever
rank adds) and divide by 2 (exact); the single process adds the same two parts where autograd
accumulates the two forward calls' gradients. The one exception is the gradient-norm log: a
float64 sum of squares, over all rows in one process, per rank and then over ranks with two: the
same non-negative terms in another order, relative difference <= 2 gamma_n (float64), half that
after the square root (GRAD_NORM_RTOL).
"""

import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.multiprocessing as mp

import distributed_worker
from diva_ext import distributed
from diva_ext.training.config import TrainConfig
from diva_ext.training.presets import PRESETS
from tolerances import gamma

SYNTHETIC = {"num_classes": 8, "images_per_class": 4, "image_size": 16}
TINY_FLAGS = ["--batch-size", "8", "--batches-per-epoch", "2", "--queue-batches", "2", "--image-size", "16",
              "--pretrained", "none",
              "--rho", "10", "--milestones", "1", "--no-progress",
              "--data-option", "num_classes=6", "images_per_class=5", "image_size=16"]
# The gradient-norm log's float64 sums of squares in another order (module docstring): n terms,
# at most the batch (8) times the backbone's feature width (< 2^17 here).
GRAD_NORM_RTOL = gamma(8 * 2**17, torch.float64)
WAIT_S = 120  # upper bound on any one job here; they took ~10-25 s on a 2-core AMD EPYC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_config(**overrides) -> dict:
    values = {**TrainConfig().to_dict(), **PRESETS["small-cpu"], "preset": "small-cpu", "pretrained": "none"}
    # frozen_bn: with per-rank BatchNorm batch statistics, 2 x 4 images do not normalise like 8.
    values.update(epochs=2, batch_size=8, batches_per_epoch=2, queue_batches=2, image_size=16, rho=10.0,
                  milestones=(1,), recall_at=(1, 2), frozen_bn=True)
    values.update(overrides)
    return TrainConfig.from_dict(values).to_dict()


def _spawn(world_size, config, out):
    ctx = mp.start_processes(distributed_worker.run, args=(world_size, _free_port(), config, SYNTHETIC, str(out)),
                             nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + WAIT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world_size}-process run did not finish within {WAIT_S} s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run with one process (global batch 8) and with two (4 + 4)."""
    config = _tiny_config()
    single, double = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("double")
    threads = torch.get_num_threads()
    try:
        distributed_worker.run(0, 1, 0, config, SYNTHETIC, str(single), forward_parts=2)
    finally:
        torch.set_num_threads(threads)
    _spawn(2, config, double)
    return {
        "single": torch.load(single / "record0.pt", weights_only=False),
        "ranks": [torch.load(double / f"record{r}.pt", weights_only=False) for r in (0, 1)],
        "double_dir": double,
    }


def test_two_processes_follow_the_single_process_trajectory(runs):
    single, (rank0, rank1) = runs["single"], runs["ranks"]
    assert len(single["losses"]) == len(rank0["losses"]) == 4  # 2 epochs x 2 steps
    # Every rank computes the same global loss.
    assert rank0["losses"] == rank1["losses"]
    for one, two in zip(single["losses"], rank0["losses"]):
        assert one.keys() == two.keys()
        for key in one:
            if key.startswith("grad_norm/"):
                assert two[key] == pytest.approx(one[key], rel=GRAD_NORM_RTOL, abs=0), key
            else:
                assert two[key] == one[key], key
    # The metrics are functions of discrete outcomes (neighbour ranks, cluster assignments)
    # computed by the same code on rank 0: equal, unless the test-set shards (other batches than
    # one process's) round an embedding across a near tie, which would move a metric by a whole
    # count, so no tolerance would help.
    for key in ("recall@1", "recall@2", "nmi", "map@r"):
        assert rank0["metrics"]["final"][key] == single["metrics"]["final"][key], key


def test_gradients_match_a_single_process_on_the_global_batch(runs):
    """DDP averages over ranks and all_gather_with_grad sums the gathered gradient: the first
    step's gradients (model, margin betas, decorrelation MLPs) equal the single-process ones."""
    single, (rank0, rank1) = runs["single"], runs["ranks"]
    assert single["grads"].keys() == rank0["grads"].keys() == rank1["grads"].keys()
    assert any(n.startswith("backbone.") for n in single["grads"])
    assert any(n.startswith("criteria.") for n in single["grads"])
    assert any(n.startswith("adversarial.") for n in single["grads"])
    for name, expected in single["grads"].items():
        torch.testing.assert_close(rank0["grads"][name], expected, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(rank1["grads"][name], rank0["grads"][name], rtol=0, atol=0, msg=name)


def test_mining_picks_negatives_held_by_the_other_rank(runs):
    single, ranks = runs["single"], runs["ranks"]
    local = [r["local"] for r in ranks]
    half = local[0].shape[0]
    for r in ranks:
        mined = r["mined"]
        # The miner sees the global batch: rank 0's images, then rank 1's, as each computed them.
        torch.testing.assert_close(mined["embeddings"], torch.cat(local), rtol=0, atol=0)
        # ... which is the single-process batch (the same slices through the same model).
        torch.testing.assert_close(mined["embeddings"], single["mined"]["embeddings"], rtol=0, atol=0)
        assert torch.equal(mined["labels"], single["mined"]["labels"])
        a, p, n = mined["triplets"]
        for got, want in zip((a, p, n), single["mined"]["triplets"]):
            assert torch.equal(got, want)
        assert (mined["labels"][n] != mined["labels"][a]).all()
        crossing = (a < half) != (n < half)
        assert crossing.any(), "no anchor got a negative from the other rank"
    # Ranks hold different classes (the sampler shards the global batch by class).
    assert not set(ranks[0]["mined"]["labels"][:half].tolist()) & set(ranks[0]["mined"]["labels"][half:].tolist())


def test_only_rank_0_writes(runs):
    out = runs["double_dir"]
    for name in ("metrics.json", "checkpoint.pt", "best.pt", "loss.png"):
        assert (out / "rank0" / name).is_file(), name
    assert not (out / "rank1").exists()


def test_helpers_are_the_identity_in_one_process():
    x = torch.randn(5, 3, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    assert distributed.all_gather(x) is x
    assert distributed.shard(7) == range(7)
    assert distributed.current_world().is_main and not distributed.current_world().is_distributed


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "10"])
def test_bad_timeout_is_named(bad):
    with pytest.raises(ValueError, match="dist-timeout"):
        distributed.init_from_env("cpu", bad)


# A `diva train` whose rank 1 fails at its first training step: it exits ("die") or stops
# responding ("hang"). Rank 0 then sits in a collective.
FAULTY_DIVA = textwrap.dedent("""
    import os, sys, time
    from diva_ext import cli
    from diva_ext.training.trainer import DiVATrainer

    if os.environ["RANK"] == "1":
        def fault(self, images, labels):
            if os.environ["DIVA_TEST_FAULT"] == "die":
                os._exit(3)
            time.sleep(600)
        DiVATrainer.training_step = fault
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("fault", ["die", "hang"])
def test_a_failed_rank_fails_the_job_instead_of_hanging(fault, tmp_path):
    script = tmp_path / "faulty_diva.py"
    script.write_text(FAULTY_DIVA)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               "train", *TINY_FLAGS, "--epochs", "50", "--dist-timeout", "3", "--out", str(tmp_path / "out")]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S,
                            env={**os.environ, "DIVA_TEST_FAULT": fault, "OMP_NUM_THREADS": "1"})
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    (tmp_path / "output.log").write_text(output)
    assert result.returncode != 0, output[-3000:]
    assert elapsed < WAIT_S
    # torchrun names the process that failed first.
    root_cause = output[output.index("Root Cause"):]
    if fault == "die":
        assert re.search(r"rank\s*:\s*1\b", root_cause) and re.search(r"exitcode\s*:\s*3\b", root_cause), root_cause
    else:  # rank 0 gives up after --dist-timeout, in one line, and torchrun ends rank 1
        assert "diva: error: distributed training failed on rank 0" in output, output[-3000:]
        assert re.search(r"rank\s*:\s*0\b", root_cause), root_cause
