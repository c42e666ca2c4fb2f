"""Shared pytest fixtures and helpers."""

import importlib.util
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

# Packages the project can run without (the GPU machines' image has neither): a test module that
# cannot be imported because one of them is missing is skipped, naming the package, instead of
# failing collection. Any other import error still fails.
OPTIONAL_PACKAGES = {"faiss": "faiss-gpu", "pytorch_metric_learning": "pytorch-metric-learning"}


def missing_optional_package(error):
    """The optional package whose absence raised `error` (an ImportError), else None."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    top = error.name.split(".")[0]
    if top in OPTIONAL_PACKAGES and importlib.util.find_spec(top) is None:
        return top
    return None


class _OptionalPackageModule(pytest.Module):
    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as error:
            package = missing_optional_package(error.__cause__)
            if package is None:
                raise
            pytest.skip(
                f"{self.path.name} needs {package} (pip install {OPTIONAL_PACKAGES[package]}), not installed",
                allow_module_level=True,
            )


def pytest_pycollect_makemodule(module_path, parent):
    return _OptionalPackageModule.from_parent(parent, path=module_path)


# Fresh inputs every run, reproducible from the seed the header prints.
SESSION_SEED = int(os.environ.get("DIVA_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"diva_ext test seed: {SESSION_SEED} (DIVA_TEST_SEED={SESSION_SEED} reproduces this run's inputs)"


@pytest.fixture
def generator(request):
    """A seeded generator of its own for each test: the session seed mixed with the test's id."""
    seed = zlib.crc32(request.node.nodeid.encode(), SESSION_SEED) % (2**31)
    return torch.Generator().manual_seed(seed)
