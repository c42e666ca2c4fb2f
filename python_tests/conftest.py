"""Shared pytest fixtures and helpers."""

import os
import random
import tempfile
import zlib

# A fresh torch.compile cache per test run: inductor's on-disk cache keys a graph without the
# Python fake kernels of our ops, so a cache left by an older build (e.g. info_nce's stats with
# 5 columns, now 6) replays stale shapes and fails the compile tests on a machine that ran them before.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="diva_ext-inductor-"))

import pytest  # noqa: E402
import torch  # noqa: E402

import diva_ext  # noqa: F401  (loads the compiled operators)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# Fresh inputs every run, reproducible from the seed the header prints.
SESSION_SEED = int(os.environ.get("DIVA_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"diva_ext test seed: {SESSION_SEED} (DIVA_TEST_SEED={SESSION_SEED} reproduces this run's inputs)"


@pytest.fixture
def generator(request):
    """A seeded generator of its own for each test: the session seed mixed with the test's id."""
    seed = zlib.crc32(request.node.nodeid.encode(), SESSION_SEED) % (2**31)
    return torch.Generator().manual_seed(seed)
