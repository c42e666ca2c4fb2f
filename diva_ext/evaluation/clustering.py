"""NMI of a k-means clustering against the class labels; k-means with torch or faiss Lloyd steps.

Both backends start from the same seeded k-means++ centres (kmeans.kmeans_plus_plus), so they
differ only in the arithmetic of the Lloyd iterations: on data with clear clusters they find the
same clustering. (faiss's own initialisation, random rows, misses well-separated clusters.)
"""

from typing import Optional

import numpy as np
import torch
from scipy.special import xlogy
from tqdm.auto import tqdm

from diva_ext.evaluation._inputs import ArrayLike, check_flag, check_int, embeddings_to_tensor
from diva_ext.evaluation._progress import tqdm_disable
from diva_ext.evaluation.backend import import_faiss, resolve_backend
from diva_ext.evaluation.kmeans import kmeans_plus_plus, lloyd
from diva_ext.evaluation.knn_torch import full_float32_matmul

SEED_LIMIT = 2**31  # faiss's seed is a C int


def kmeans_assignments(
    x: ArrayLike,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    backend: str = "auto",
    use_gpu: Optional[bool] = None,
    progress: Optional[bool] = None,
) -> np.ndarray:
    """Cluster the rows of ``x`` into ``k`` groups: k-means++ centres, then ``niter`` Lloyd steps.

    Args:
        x: [N, D] float tensor or array (finite; rescaled like evaluate()'s embeddings, so the
            clustering does not depend on x's scale), N >= k.
        k: number of clusters, 1 <= k <= N.
        niter: Lloyd iterations (a fixed budget, no convergence test).
        seed: seeds k-means++ (and faiss's own random choices), in [0, 2**31); same inputs, seed
            and backend -> same clustering.
        backend: ``"torch"``, ``"faiss"`` or ``"auto"`` (see evaluate()).
        use_gpu: faiss's GPU index (faiss backend only; see evaluate()).
        progress: tqdm bars (``None``: on a terminal only).

    Returns:
        int64 [N] cluster id of each row, in [0, k).
    """
    tensor = embeddings_to_tensor(x, "x")
    n = tensor.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= N = {n} clusters, got k={k!r}")
    niter = check_int(niter, "niter", 1)
    seed = check_int(seed, "seed", 0, SEED_LIMIT)
    progress = check_flag(progress, "progress", optional=True)
    backend, use_gpu = resolve_backend(backend, tensor.device, check_flag(use_gpu, "use_gpu", optional=True))
    return cluster(tensor, int(k), niter=niter, seed=seed, backend=backend, use_gpu=use_gpu, progress=progress)


def cluster(
    x: torch.Tensor, k: int, *, niter: int, seed: int, backend: str, use_gpu: bool, progress: Optional[bool]
) -> np.ndarray:
    """kmeans_assignments() on checked arguments: x a rescaled float32 tensor, backend resolved."""
    generator = torch.Generator().manual_seed(seed)
    with full_float32_matmul():
        centres = x[kmeans_plus_plus(x, k, generator, progress=progress).to(x.device)]
        if backend == "torch":
            return lloyd(x, centres, niter, progress=progress).cpu().numpy()
    return _faiss_lloyd(x.cpu().numpy(), centres.cpu().numpy(), niter, seed, use_gpu, progress)


def _faiss_lloyd(x: np.ndarray, centroids: np.ndarray, niter: int, seed: int, use_gpu: bool, progress) -> np.ndarray:
    faiss = import_faiss()
    n, dim = x.shape
    k = centroids.shape[0]
    # min_points_per_centroid=1: small test sets legitimately have ~2 points per class and faiss
    # would otherwise print a warning; max_points_per_centroid=n: cluster all points, no subsample.
    options = dict(seed=seed, gpu=use_gpu, verbose=False, min_points_per_centroid=1, max_points_per_centroid=n)
    # One faiss call per iteration, so that a progress bar can follow.
    bar = tqdm(range(niter), desc="k-means", unit="iter", leave=False, disable=tqdm_disable(progress, niter))
    try:
        for _ in bar:
            kmeans = faiss.Kmeans(dim, k, niter=1, **options)
            kmeans.train(x, init_centroids=centroids)
            centroids = kmeans.centroids
        _, assignment = kmeans.index.search(x, 1)
    except RuntimeError as err:  # faiss's C++ exceptions arrive as RuntimeError
        raise RuntimeError(f"faiss k-means failed (N={n}, D={dim}, k={k}): {err}") from err
    return assignment[:, 0].astype(np.int64)


def nmi_score(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Normalised mutual information with arithmetic-mean normalisation.

    ``NMI = I(T; P) / ((H(T) + H(P)) / 2)``, equal to
    ``sklearn.metrics.normalized_mutual_info_score(labels_true, labels_pred)``, including its
    conventions: 1.0 when both labelings have a single cluster, 0.0 when I(T; P) = 0 otherwise.

    Args:
        labels_true, labels_pred: int [N] labelings of the same N items (any integer ids).
    """
    labels_true = np.asarray(labels_true)
    labels_pred = np.asarray(labels_pred)
    if labels_true.shape != labels_pred.shape or labels_true.ndim != 1:
        raise ValueError(
            f"labels_true and labels_pred must be 1-D of equal length, got shapes "
            f"{labels_true.shape} and {labels_pred.shape}"
        )
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    nt, np_ = int(t.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1
    if nt == np_ and nt <= 1:
        return 1.0
    n = t.shape[0]
    # Only the occupied cells of the contingency table: nt x np_ is 11k x 11k on SOP (1 GiB),
    # the occupied cells at most N.
    _, cell_counts = np.unique(t * np_ + p, return_counts=True)
    joint = cell_counts / n
    pt, pp = np.bincount(t) / n, np.bincount(p) / n
    # xlogy(0, 0) = 0: empty classes or clusters contribute nothing.
    mi = float(xlogy(joint, joint).sum() - xlogy(pt, pt).sum() - xlogy(pp, pp).sum())
    if mi <= 0.0:
        return 0.0
    entropy = -(xlogy(pt, pt).sum() + xlogy(pp, pp).sum())
    return float(min(mi / (entropy / 2.0), 1.0))
