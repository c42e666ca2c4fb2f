"""Evaluation with faiss absent, and how evaluate() chooses its backend.

faiss is hidden with ``sys.modules["faiss"] = None``: ``import faiss`` then raises
ModuleNotFoundError, as on a machine without it, even where it is installed.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diva_ext.evaluation import evaluate, kmeans_assignments
from diva_ext.evaluation.backend import faiss_available, faiss_gpu_available, resolve_backend

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert not faiss_available()


def _data(generator, n=83, dim=6, classes=7):
    return torch.randn(n, dim, generator=generator), torch.randint(0, classes, (n,), generator=generator)


def test_auto_is_torch_without_faiss(no_faiss, generator):
    x, labels = _data(generator)
    auto = evaluate(x, labels, kmeans_seed=3)
    assert set(auto) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi"}
    assert auto == evaluate(x, labels, kmeans_seed=3, backend="torch")
    np.testing.assert_array_equal(kmeans_assignments(x, 7, seed=3), kmeans_assignments(x, 7, seed=3, backend="torch"))


def test_asking_for_faiss_without_it_says_so(no_faiss, generator):
    x, labels = _data(generator)
    with pytest.raises(ValueError, match=r"backend='faiss' needs faiss, which cannot be imported .*backend='torch'"):
        evaluate(x, labels, backend="faiss")
    with pytest.raises(ValueError, match="use_gpu=True needs faiss"):
        evaluate(x, labels, use_gpu=True)
    with pytest.raises(ValueError, match="backend='faiss' needs faiss"):
        kmeans_assignments(x, 3, backend="faiss")


@pytest.mark.parametrize("backend", ["numpy", "", None, 1])
def test_unknown_backend(backend, generator):
    x, labels = _data(generator)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'faiss'"):
        evaluate(x, labels, backend=backend)


@pytest.mark.parametrize("use_gpu", [True, False])
def test_use_gpu_is_a_faiss_option(use_gpu, generator):
    x, labels = _data(generator)
    with pytest.raises(ValueError, match=f"use_gpu={use_gpu} is a faiss option; backend='torch' runs on"):
        evaluate(x, labels, backend="torch", use_gpu=use_gpu)


def test_auto_picks_faiss_when_it_imports():
    pytest.importorskip("faiss", reason="faiss not installed: nothing to pick")
    assert resolve_backend("auto", CPU, None) == ("faiss", False)
    assert resolve_backend("faiss", CPU, False) == ("faiss", False)


def test_auto_keeps_cuda_embeddings_on_their_gpu_when_faiss_sees_none():
    # Only the device's type matters here, so no GPU is needed to check the choice.
    pytest.importorskip("faiss", reason="faiss not installed: auto is torch anyway")
    if faiss_gpu_available():
        pytest.skip("this faiss sees a GPU: auto uses it")
    assert resolve_backend("auto", CUDA, None) == ("torch", False)
    assert resolve_backend("faiss", CUDA, None) == ("faiss", False)


def test_importing_evaluation_does_not_import_faiss():
    code = "import sys, diva_ext.evaluation; sys.exit('faiss' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.slow
def test_evaluation_suite_passes_without_faiss():
    """Every evaluation test file, faiss hidden for the whole run: those needing faiss skip naming
    it (pytest.importorskip), all others pass on the torch backend."""
    files = sorted(str(p) for p in (ROOT / "python_tests").glob("test_evaluation_*.py") if p.name != Path(__file__).name)
    code = "import sys; sys.modules['faiss'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    env = dict(os.environ)
    env.setdefault("DIVA_TEST_SEED", str(_session_seed()))
    child = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", "-rs", *files],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    skips = [line for line in child.stdout.splitlines() if line.startswith("SKIPPED")]
    # Only a missing optional package (faiss; pytorch-metric-learning, absent on the GPU stack) or
    # a missing GPU may skip a test here.
    allowed = ("faiss", "GPU", "pytorch_metric_learning")
    assert skips and all(any(name in line for name in allowed) for line in skips), skips


def _session_seed():
    from conftest import SESSION_SEED

    return SESSION_SEED
