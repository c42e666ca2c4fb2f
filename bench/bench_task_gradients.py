"""What measuring each task's gradient at the backbone costs: one DiVA training step of `diva
train`'s small-cpu preset (all four tasks, fused ops) with and without the per-term
``torch.autograd.grad`` calls (diva_ext.training.task_gradients), timed interleaved.

    python bench/bench_task_gradients.py [--batch-size 112] [--rounds 7]

Each round times a few steps of each variant in turn, so that a change of machine load shifts
both alike; the figure is the median over rounds and the ratio is with / without.
"""

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diva_ext.training.config import TrainConfig  # noqa: E402
from diva_ext.training.presets import PRESETS  # noqa: E402
from diva_ext.training.task_gradients import VanishingTaskGradientWarning  # noqa: E402
from diva_ext.training.trainer import DiVATrainer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    args = parser.parse_args()
    values = {**TrainConfig().to_dict(), **PRESETS["small-cpu"], "preset": "small-cpu", "pretrained": "none",
              "batch_size": args.batch_size, "queue_batches": 2}
    config = TrainConfig.from_dict({k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__})
    with tempfile.TemporaryDirectory() as out:
        trainer = DiVATrainer(config, Path(out), progress=False, log=lambda line: None,
                              dataset_options={"num_classes": 100, "images_per_class": 8})
        trainer.fill_queue()
        batches = iter(trainer.loader)
        batch = next(batches)
        times = {"with": [], "without": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VanishingTaskGradientWarning)
            trainer.training_step(*batch[:2])  # warm-up
            for _ in range(args.rounds):
                for variant in times:
                    trainer.measure_gradients = variant == "with"
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        trainer.training_step(*batch[:2])
                    times[variant].append((time.perf_counter() - start) / args.steps)
    info = common.machine_info("cpu")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {info['cpu']}, {info['threads']} threads, 1-min load {info['load_average_1min']}")
    print(f"batch {args.batch_size}: step with norms {med['with'] * 1e3:.1f} ms, without {med['without'] * 1e3:.1f} ms, "
          f"ratio {med['with'] / med['without']:.3f} (median of {args.rounds} interleaved rounds x {args.steps} steps)")
    print("per-round ratios:", " ".join(f"{a / b:.3f}" for a, b in zip(times["with"], times["without"])))


if __name__ == "__main__":
    main()
