"""Shared pytest fixtures and helpers."""

import pytest
import torch

import diva_ext  # noqa: F401  (loads the compiled operators)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def generator(request):
    """A fresh, test-specific seeded generator (seed varies per test, fixed across runs)."""
    seed = abs(hash(request.node.nodeid)) % (2**31)
    return torch.Generator().manual_seed(seed)
