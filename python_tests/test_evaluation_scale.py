"""evaluate() does not depend on the embeddings' scale, and never takes the interpreter down.

Every metric is invariant to a common factor of the embeddings. The inputs here differ by powers of
two, which (after evaluate's own power-of-two rescaling) give bit-identical float32 embeddings, so
the metrics must be *equal*, not close: any difference is the scale leaking into the arithmetic
(squared norms overflowing to inf near 1e19, underflowing to 0 below ~1e-22, a finite float64
beyond float32's range mistaken for inf).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from diva_ext.evaluation import evaluate

# 2**+-63 ~ 1e+-19 (the magnitudes of the reported failure), 2**-75 ~ 3e-23 (squares below float32's normal
# range), 2**+-100 ~ 1e+-30, 2**+-130 ~ 1e+-39 (beyond float32's range: only float64 holds them).
EXPONENTS = [-130, -100, -75, -63, 63, 100, 130]


def _data(generator, n=157, dim=11, classes=9):
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return x, labels


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_retrieval_is_scale_free(generator, exponent):
    x, labels = _data(generator)
    base = evaluate(x, labels, nmi=False)
    assert evaluate(x * 2.0**exponent, labels, nmi=False) == base
    assert evaluate((x * 2.0**exponent).numpy(), labels.numpy(), nmi=False) == base


@pytest.mark.parametrize("exponent", [-100, -63, 63, 100])
def test_float32_input_is_scale_free(generator, exponent):
    x, labels = _data(generator)
    x = x.float()
    base = evaluate(x, labels, nmi=False)
    assert evaluate(x * 2.0**exponent, labels, nmi=False) == base


def test_subnormal_float64_input(generator):
    # Largest magnitude ~1e-310: float64 subnormals, where 2**1030 itself is not a float64.
    x, labels = _data(generator)
    base = evaluate(x, labels, nmi=False)
    assert evaluate(x * 2.0**-1030, labels, nmi=False) == base


def test_all_zero_embeddings_are_valid(generator):
    # Every distance ties at 0: recall@k is then whatever order the ties take, but it is a number.
    _, labels = _data(generator)
    out = evaluate(torch.zeros(157, 3), labels, map_at_r=False)
    assert all(0.0 <= v <= 1.0 for v in out.values())


_HUGE_KMEANS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from diva_ext.evaluation import evaluate
    rng = np.random.default_rng(int(sys.argv[1]))
    x = rng.standard_normal((157, 11)) * 1e19
    labels = rng.integers(0, 9, 157)
    print(json.dumps(evaluate(x, labels, kmeans_seed=4)))
    """
)


def test_huge_magnitudes_with_nmi_do_not_abort_the_process(generator):
    """float64 embeddings of magnitude 1e19 made faiss's k-means throw inside OpenMP: abort().

    Run in a child process so that a regression fails this test instead of killing the suite.
    The child's metrics must equal those of the same embeddings times 2**-64 (magnitude ~0.5).
    """
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    child = subprocess.run([sys.executable, "-c", _HUGE_KMEANS, str(seed)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, f"child exited with {child.returncode}: {child.stderr[-2000:]}"
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((157, 11)) * 1e19
    labels = rng.integers(0, 9, 157)
    assert json.loads(child.stdout.strip().splitlines()[-1]) == evaluate(x * 2.0**-64, labels, kmeans_seed=4)


@pytest.mark.parametrize("exponent", [-100, -75, 130])
def test_nmi_is_scale_free(generator, exponent):
    # Magnitudes whose k-means once aborted the process (1e19, 1e30) only run in a child (above).
    x, labels = _data(generator)
    base = evaluate(x, labels, recall_at=(1,), map_at_r=False, kmeans_seed=7)
    assert evaluate(x * 2.0**exponent, labels, recall_at=(1,), map_at_r=False, kmeans_seed=7) == base
