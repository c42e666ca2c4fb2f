"""The torch and faiss backends of evaluate(): exact kNN against an integer reference, agreement
with each other, self-exclusion by index, and k-means (k-means++ draws, NMI on clear clusters and
at chance level).

Tie-free integer data makes exact comparisons possible: with integer coordinates and every
squared distance below 2**22, float32 computes each squared distance exactly (all partial sums
are integers below 2**24, whatever the summation order or blocking), so any correct exact kNN
(faiss, our GEMM + topk, an int64 reference, PML's cdist) returns the same neighbours once no query
has two other rows at the same distance.
"""

import math

import numpy as np
import pytest
import torch

from diva_ext.evaluation import evaluate, kmeans_assignments, knn_torch, nmi_score
from diva_ext.evaluation._inputs import embeddings_to_tensor
from diva_ext.evaluation.kmeans import _squared_distances, kmeans_plus_plus
from diva_ext.evaluation.knn_torch import squared_norms

from tolerances import gamma


def faiss_or_skip():
    return pytest.importorskip("faiss", reason="faiss not installed: the faiss backend cannot run")


@pytest.fixture(params=["torch", "faiss"])
def backend(request):
    if request.param == "faiss":
        faiss_or_skip()
    return request.param


def coordinate_span(dim):
    """Largest s with 4 dim s^2 <= 2**22: coordinates in [-s, s] keep squared distances below 2**22
    (float32-exact, and distinct integers below 2**22 keep distinct float32 square roots, which
    cdist-based references take)."""
    return math.isqrt(2**22 // (4 * dim))


def tie_free_rows(points):
    """Indices (in order) of rows of int64 ``points`` to keep so that no kept row has two other
    kept rows at the same squared distance: rows in ties are removed until none is left."""
    keep = torch.arange(points.shape[0])
    while True:
        p = points[keep]
        d2 = (p[:, None, :] - p[None, :, :]).pow(2).sum(-1)
        d2.fill_diagonal_(-1)  # a point's distance to itself is not a competitor
        ordered, order = d2.sort(dim=1)
        same = ordered[:, 1:] == ordered[:, :-1]
        if not same.any():
            return keep
        # One row of every tie goes (the later one in each row's order), all ties at once.
        drop = order[:, 1:][same].unique()
        keep = keep[~torch.isin(torch.arange(keep.numel()), drop)]


def tie_free_points(generator, n, dim):
    """int64 [n, dim] points whose squared distances from each point to the others are distinct."""
    span = coordinate_span(dim)
    points = torch.randint(-span, span + 1, (n + n // 2 + 16, dim), generator=generator)
    keep = tie_free_rows(points)
    assert keep.numel() >= n, "too many collisions; draw more points"
    return points[keep[:n]]


def reference_neighbours(points, k):
    """int64 [N, k]: each row's k nearest other rows by exact int64 squared distance."""
    d2 = (points[:, None, :] - points[None, :, :]).pow(2).sum(-1)
    d2.fill_diagonal_(torch.iinfo(torch.int64).max)
    return d2.argsort(dim=1)[:, :k]


@pytest.mark.parametrize("n, dim, k, chunk", [(157, 5, 9, None), (97, 3, 96, 7), (64, 17, 5, 1), (31, 2, 30, 31)])
def test_torch_neighbours_are_exact(generator, n, dim, k, chunk):
    points = tie_free_points(generator, n, dim)
    got = torch.cat([ids for _, ids in knn_torch.iter_neighbours(points.float(), k, chunk_size=chunk)])
    torch.testing.assert_close(got, reference_neighbours(points, k), rtol=0, atol=0)


@pytest.mark.parametrize("n, dim, classes, chunk", [(301, 5, 37, None), (157, 17, 11, 10), (60, 3, 2, 1)])
def test_backends_agree_on_tie_free_data(generator, n, dim, classes, chunk):
    faiss_or_skip()
    points = tie_free_points(generator, n, dim).float()
    labels = torch.randint(0, classes, (n,), generator=generator)
    kwargs = dict(recall_at=(1, 2, 4, 8, 16), nmi=False, chunk_size=chunk)
    torch_metrics = evaluate(points, labels, backend="torch", **kwargs)
    assert torch_metrics == evaluate(points, labels, backend="faiss", **kwargs)
    assert 0.0 < torch_metrics["recall@1"] < 1.0


@pytest.mark.parametrize("n, dim, classes", [(301, 17, 37), (97, 5, 11)])
def test_torch_backend_matches_pytorch_metric_learning(generator, n, dim, classes):
    """PML with its torch kNN (so this runs without faiss) as an independent implementation."""
    accuracy = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.inference import CustomKNN

    # Class offsets and per-row noise of the same range, so that scores are far from 0 and 1.
    half = coordinate_span(dim) // 2
    labels = torch.randint(0, classes, (n + n // 2 + 16,), generator=generator)
    offsets = torch.randint(-half, half + 1, (classes, dim), generator=generator)
    points = offsets[labels] + torch.randint(-half, half + 1, (labels.numel(), dim), generator=generator)
    keep = tie_free_rows(points)[:n]
    assert keep.numel() == n
    points, labels = points[keep], labels[keep]
    ours = evaluate(points.float(), labels, (1,), nmi=False, backend="torch")
    theirs = accuracy.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    ).get_accuracy(points.float(), labels)
    assert 0.05 < ours["recall@1"] < 0.95
    # Both are float64 means of n per-query values in [0, 1] (AP@R itself a sum of R < n terms),
    # summed in any order: each within gamma_n + gamma_{n+3} of the exact mean.
    tol = 2 * (gamma(n, torch.float64) + gamma(n + 3, torch.float64))
    assert abs(ours["recall@1"] - theirs["precision_at_1"]) <= tol
    assert abs(ours["map@r"] - theirs["mean_average_precision_at_r"]) <= tol


def _line(xs):
    return torch.tensor(xs, dtype=torch.float32)[:, None]


def test_hand_made_recall_and_map_at_r(backend):
    # The worked example of test_evaluation_retrieval.py, on each backend.
    out = evaluate(_line([0, 1, 3, 4.5, 10]), [0, 1, 0, 0, 1], (1, 2, 4), nmi=False, backend=backend)
    assert out["recall@1"] == pytest.approx(2 / 5)
    assert out["recall@2"] == pytest.approx(3 / 5)
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["map@r"] == pytest.approx((0.25 + 0 + 0.5 + 0.5 + 0) / 5)


def test_duplicates_are_neighbours_and_the_query_never_is():
    # 9 copies of one point (more than k = 4 of them, so distance 0 cannot tell the query apart)
    # and 6 others: each copy's 4 neighbours are 4 other copies, never itself.
    x = torch.cat([torch.zeros(9, 3), torch.arange(1.0, 7.0)[:, None].expand(6, 3)])
    ids = torch.cat([i for _, i in knn_torch.iter_neighbours(x, 4, chunk_size=4)])
    rows = torch.arange(15)[:, None]
    assert not (ids == rows).any()
    assert (ids[:9] < 9).all()


def test_exact_duplicate_of_another_class(backend):
    # Rows 0 and 1 coincide with different labels: row 1's nearest other row is row 0, a miss.
    out = evaluate(_line([0, 0, 3, 3.2]), [1, 0, 0, 0], (1, 2), nmi=False, backend=backend)
    assert out["recall@1"] == pytest.approx(2 / 3)
    assert out["recall@2"] == pytest.approx(1.0)


def test_default_chunk_bounds_the_score_block():
    # SOP's test split: 60502 rows. A [chunk, N] block at 16 bytes per entry stays within budget.
    n = 60502
    chunk = knn_torch.default_chunk_size(n)
    assert 16 * chunk * n <= knn_torch.BLOCK_BYTES < 16 * (chunk + 1) * n
    assert knn_torch.default_chunk_size(10) == 10


# --- k-means -------------------------------------------------------------------------------


def _exact_kmeans_pp_probabilities(values, k):
    """{ordered tuple of k indices: probability} of textbook k-means++ on 1-D points."""
    values = np.asarray(values, dtype=np.float64)
    out = {}

    def walk(chosen, p):
        if len(chosen) == k:
            out[tuple(chosen)] = p
            return
        if not chosen:
            for i in range(len(values)):
                walk([i], p / len(values))
            return
        d2 = np.min((values[:, None] - values[chosen][None, :]) ** 2, axis=1)
        for i in np.flatnonzero(d2 > 0):
            walk(chosen + [i], p * d2[i] / d2.sum())

    walk([], 1.0)
    return out


@pytest.mark.parametrize("block_size", [1, 2])
def test_kmeans_plus_plus_draws_the_textbook_distribution(generator, block_size):
    """block_size=2 draws both later centres in one block: the rejection step must make the third
    centre's law use D^2 after the second (sampling from the stale D^2 would be far off)."""
    from scipy.stats import chisquare

    values = [0.0, 1.0, 3.0, 7.0, 15.0]
    x = torch.tensor(values)[:, None]
    exact = _exact_kmeans_pp_probabilities(values, 3)
    draws = 3000
    base = int(torch.randint(0, 2**30, (), generator=generator))
    counts = dict.fromkeys(exact, 0)
    for i in range(draws):
        picked = tuple(kmeans_plus_plus(x, 3, torch.Generator().manual_seed(base + i), block_size=block_size).tolist())
        counts[picked] += 1  # a KeyError here is an impossible draw (a repeated centre)
    # Pool outcomes with expected count < 5 into one bin (the chi-square approximation needs it).
    keys = sorted(exact, key=exact.get)
    observed, expected, pool_o, pool_e = [], [], 0, 0.0
    for key in keys:
        if draws * exact[key] < 5:
            pool_o, pool_e = pool_o + counts[key], pool_e + draws * exact[key]
        else:
            observed.append(counts[key])
            expected.append(draws * exact[key])
    observed.append(pool_o)
    expected.append(pool_e)
    # p < 1e-4 fails: a false alarm once in 10^4 runs; a wrong law (e.g. stale D^2) gives p ~ 0.
    assert chisquare(observed, expected).pvalue > 1e-4


def _separated_blobs(generator, classes=13, per_class=(7, 30), dim=16, separation=1e6):
    """Blobs of unit spread around centres ``separation`` apart on the axes (far beyond spread)."""
    sizes = torch.randint(per_class[0], per_class[1], (classes,), generator=generator)
    labels = torch.repeat_interleave(torch.arange(classes), sizes)
    centres = separation * torch.eye(classes, dim, dtype=torch.float64)
    x = centres[labels] + torch.randn(labels.numel(), dim, generator=generator, dtype=torch.float64)
    return x, labels


def test_both_backends_find_well_separated_clusters(generator, backend):
    """Both must find the truth, so NMI is exactly 1.

    Why they must: k-means++ zeroes a squared distance below float32's rounding bound
    (2 (D + 2) u (|x|^2 + |c|^2), ~4e6 here, against within-blob squared distances below ~200),
    so once a blob holds a centre its points have D^2 = 0 exactly (checked below for every pair in
    a blob) and every draw lands in a blob without one: one centre per blob, whatever the seed.
    Then every point is nearer its own blob's centre (squared distances ~2e12 to the others), and
    Lloyd steps keep it so.
    """
    x, labels = _separated_blobs(generator)
    scaled = embeddings_to_tensor(x)
    for c in labels.unique():
        blob = scaled[labels == c]
        assert (_squared_distances(blob, squared_norms(blob), blob) == 0).all()
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    out = evaluate(x, labels, (1,), map_at_r=False, kmeans_seed=seed, backend=backend)
    # The truth found, NMI = 2 I / (H_a + H_b) is 1 up to the float64 rounding of entropies summed
    # over C terms (each p log p to a few ulps): 8 (C + 2) eps bounds it; one merged or split blob
    # costs far more (NMI < 0.99 at 13 blobs).
    classes = int(labels.unique().numel())
    assert abs(out["nmi"] - 1.0) <= 8 * (classes + 2) * torch.finfo(torch.float64).eps, out["nmi"]


def test_nmi_at_chance_level_on_structure_free_data(generator):
    """Embeddings with no structure and labels independent of them: any clustering is independent
    of the labels, so both backends' NMI must be chance level, whatever local optimum each finds.

    Tolerance from the G-test: for independent labelings, 2 N I (nats) is asymptotically
    chi-square with (C - 1)(K - 1) degrees of freedom, so I has mean (C-1)(K-1) / (2N) and standard
    deviation sqrt(2 (C-1)(K-1)) / (2N); NMI divides I by the mean entropy. Each backend's NMI must
    lie within 6 standard deviations of that mean (a false alarm below 1e-8), which bounds the
    two backends' difference by 12 of them.
    """
    n, dim, classes = 1500, 8, 10
    x = torch.randn(n, dim, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    backends = ["torch"] + (["faiss"] if _has_faiss() else [])
    for name in backends:
        clusters = kmeans_assignments(x, classes, seed=seed, backend=name)
        k_used = len(np.unique(clusters))
        dof = (classes - 1) * (k_used - 1)
        mean_entropy = (_entropy(labels.numpy()) + _entropy(clusters)) / 2
        mean, sd = dof / (2 * n) / mean_entropy, math.sqrt(2 * dof) / (2 * n) / mean_entropy
        got = nmi_score(labels.numpy(), clusters)
        assert abs(got - mean) < 6 * sd, (name, got, mean, sd)


def _has_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _entropy(labels):
    p = np.bincount(np.unique(labels, return_inverse=True)[1]) / len(labels)
    return float(-(p * np.log(p)).sum())


def test_lloyd_never_increases_the_objective(generator):
    """Each Lloyd step (assign to the nearest centroid, move centroids to their means; an empty one
    stays) cannot increase the sum of squared distances; allowed slack: float32 rounding of the
    distances used to assign, 2 (D + 2) u |x|^2 per point."""
    x = torch.randn(400, 6, generator=generator)
    seed = int(torch.randint(0, 2**31, (), generator=generator))

    def objective(assignment):
        assignment = torch.from_numpy(assignment)
        means = torch.zeros(12, 6, dtype=torch.float64).index_add_(0, assignment, x.double())
        means /= torch.bincount(assignment, minlength=12).clamp(min=1).unsqueeze(1)
        return float((x.double() - means[assignment]).pow(2).sum())

    values = [objective(kmeans_assignments(x, 12, niter=i, seed=seed, backend="torch")) for i in (1, 2, 4, 8)]
    slack = 2 * (6 + 2) * 2.0**-24 * float(x.double().pow(2).sum())
    assert all(b <= a + slack for a, b in zip(values, values[1:])), values


def test_kmeans_is_seeded(generator, backend):
    x = torch.randn(200, 5, generator=generator)
    first = kmeans_assignments(x, 9, seed=5, backend=backend)
    np.testing.assert_array_equal(first, kmeans_assignments(x, 9, seed=5, backend=backend))
    assert first.min() >= 0 and first.max() < 9


def test_reduced_matmul_precision_set_for_training_does_not_leak_in(generator):
    """A trainer may allow TF32/bf16 float32 GEMMs ("medium"); the kNN still runs them at full
    precision (tie-free integer data: exact only then), and the caller's setting is restored."""
    points = tie_free_points(generator, 157, 5).float()
    labels = torch.randint(0, 11, (157,), generator=generator)
    exact = evaluate(points, labels, nmi=False, backend="torch")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert evaluate(points, labels, backend="torch", nmi=False) == exact
        kmeans_assignments(points, 11, backend="torch", niter=2)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


# --- on a GPU ------------------------------------------------------------------------------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("n, dim, chunk", [(301, 5, None), (157, 17, 10)])
def test_torch_backend_on_cuda_matches_cpu(generator, n, dim, chunk):
    points = tie_free_points(generator, n, dim).float()
    labels = torch.randint(0, 23, (n,), generator=generator)
    kwargs = dict(recall_at=(1, 2, 4, 8, 16), nmi=False, backend="torch", chunk_size=chunk)
    assert evaluate(points.cuda(), labels.cuda(), **kwargs) == evaluate(points, labels, **kwargs)
    ids = torch.cat([i for _, i in knn_torch.iter_neighbours(points.cuda(), 7, chunk_size=chunk)])
    assert ids.is_cuda
    torch.testing.assert_close(ids.cpu(), reference_neighbours(points.long(), 7), rtol=0, atol=0)


@requires_cuda
@pytest.mark.cuda
def test_kmeans_on_cuda_is_seeded_and_finds_separated_clusters(generator):
    x, labels = _separated_blobs(generator)
    x = x.cuda()
    first = kmeans_assignments(x, 13, seed=9, backend="torch")
    np.testing.assert_array_equal(first, kmeans_assignments(x, 13, seed=9, backend="torch"))
    assert nmi_score(labels.numpy(), first) == 1.0
