"""The CUDA kernels on the CPU: loader of the test-only CUDA emulation (csrc/emulation/).

`load()` imports the `diva_ext._cuda_emulated` extension, where every kernel of csrc/cuda/ is
compiled for the CPU through the emulation of the CUDA execution model, and returns its ops,
`torch.ops.diva_ext_emulated`. Each op takes a trailing `schedule_seed`: it picks the
interleaving of the emulated threads (block order, which thread runs at each barrier and
yield point), so a seed reproduces a run and different seeds explore different schedules.
Kernel errors (out-of-bounds access, divergent barrier, deadlock) raise RuntimeError.

`seeds(k)` gives the schedule seeds a test should try: k seeds starting at
$DIVA_EMULATION_SEED (default 0), so CI runs can explore other interleavings reproducibly.

Mutation testing: `barrier_lines(header)` lists the lines of a kernel header that call
__syncthreads(), and `with without_barrier(header, line):` runs the kernels with that barrier
removed, so a test can show that removing any barrier is caught.
"""

import contextlib
import importlib
import os
import re
from pathlib import Path

import torch

BUILD_HINT = (
    "The CUDA emulation extension (diva_ext/_cuda_emulated) is missing or failed to load. "
    "Build it from the repository root with `python setup.py build_ext --inplace` "
    "(it is built with the CPU extension, also under DIVA_FORCE_CPU=1)."
)


def load():
    """Imports diva_ext (the CPU kernels) and the emulated CUDA kernels; returns their ops."""
    import diva_ext  # noqa: F401  (the reference CPU kernels, torch.ops.diva_ext)

    try:
        importlib.import_module("diva_ext._cuda_emulated")
    except ImportError as err:
        raise ImportError(f"{BUILD_HINT}\nCause: {err}") from err
    return torch.ops.diva_ext_emulated


def base_seed():
    """The first schedule seed of the run ($DIVA_EMULATION_SEED, default 0)."""
    return int(os.environ.get("DIVA_EMULATION_SEED", "0"))


def seeds(k):
    """k schedule seeds for one test, reproducible from $DIVA_EMULATION_SEED."""
    return [base_seed() + i for i in range(k)]


REPO = Path(__file__).resolve().parents[2]


def barrier_lines(header):
    """Lines (1-based) of `header` (a path from the repository root) calling __syncthreads()."""
    text = (REPO / header).read_text().splitlines()
    return [i + 1 for i, line in enumerate(text) if re.search(r"\b__syncthreads\(\)", line.split("//")[0])]


@contextlib.contextmanager
def without_barrier(header, line):
    """Runs the emulated kernels with the __syncthreads() at `header`:`line` skipped."""
    ops = load()
    ops.set_barrier_mutation(header, line)
    try:
        yield
    finally:
        ops.set_barrier_mutation("", 0)


def barrier_removal_is_caught(header, line, run, tries=3):
    """True when skipping the __syncthreads() at `header`:`line` changes what `run(seed)` returns
    (a list of tensors; correct kernels are bitwise schedule-independent) under one of `tries`
    schedules, or makes the launch fail."""
    want = run(base_seed())
    with without_barrier(header, line):
        for seed in seeds(tries):
            try:
                got = run(seed)
            except RuntimeError:
                return True
            if not all(torch.equal(a, b) for a, b in zip(got, want)):
                return True
    return False
