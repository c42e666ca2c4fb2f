"""Shared pytest fixtures and helpers."""

import os
import random
import zlib

import pytest
import torch

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
