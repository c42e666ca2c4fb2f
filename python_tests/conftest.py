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


# Tests whose module imports without faiss but whose run reaches it: the `diva` command loads
# diva_ext.training.trainer, which imports diva_ext.evaluation, which needs faiss. (Drop entries
# here once evaluation works without faiss.)
NEEDS_FAISS_AT_RUN_TIME = {
    "python_tests/test_cli.py::test_train_then_eval",
    "python_tests/test_cli.py::test_bad_arguments[args1-epochs must be a positive integer]",
    "python_tests/test_cli.py::test_bad_arguments[args3-tasks must be distinct names]",
    "python_tests/test_cli.py::test_bad_arguments[args4-multiple of samples-per-class]",
    "python_tests/test_cli.py::test_bad_arguments[args6-amp bf16 needs a CUDA device]",
    "python_tests/test_cli.py::test_bad_arguments[args9-dist-timeout must be a positive number]",
    "python_tests/test_cli.py::test_missing_or_empty_data_root[<lambda>-does not exist]",
    "python_tests/test_cli.py::test_missing_or_empty_data_root[<lambda>-CUB_200_2011/images not found under]",
    "python_tests/test_cli.py::test_missing_checkpoint_for_resume",
    "python_tests/test_cli.py::test_corrupt_checkpoint",
    "python_tests/test_cli.py::test_output_folder_that_is_a_file",
}


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("faiss") is not None:
        return
    skip = pytest.mark.skip(reason="needs faiss (pip install faiss-gpu), not installed: the diva command's trainer imports it")
    for item in items:
        if item.nodeid in NEEDS_FAISS_AT_RUN_TIME:
            item.add_marker(skip)


# Fresh inputs every run, reproducible from the seed the header prints.
SESSION_SEED = int(os.environ.get("DIVA_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"diva_ext test seed: {SESSION_SEED} (DIVA_TEST_SEED={SESSION_SEED} reproduces this run's inputs)"


@pytest.fixture
def generator(request):
    """A seeded generator of its own for each test: the session seed mixed with the test's id."""
    seed = zlib.crc32(request.node.nodeid.encode(), SESSION_SEED) % (2**31)
    return torch.Generator().manual_seed(seed)
