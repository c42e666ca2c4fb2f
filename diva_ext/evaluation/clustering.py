"""NMI of a faiss k-means clustering against the class labels."""

from typing import Optional

import faiss
import numpy as np
from scipy.special import xlogy
from tqdm.auto import tqdm

from diva_ext.evaluation._progress import tqdm_disable


def kmeans_assignments(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    use_gpu: bool = False,
    progress: Optional[bool] = None,
) -> np.ndarray:
    """Cluster the rows of ``x`` into ``k`` groups with faiss k-means.

    Args:
        x: [N, D] float32 C-contiguous array, N >= k.
        k: number of clusters.
        niter: Lloyd iterations (faiss runs them one call at a time so a progress bar can follow).
        seed: faiss's seed for the initial centroids; same inputs and seed -> same clustering.
        use_gpu: run the assignment steps on faiss's GPU index.
        progress: tqdm bar over iterations (``None``: on a terminal only).

    Returns:
        int64 [N] cluster id of each row, in [0, k).
    """
    n, dim = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= N = {n} clusters, got k={k}")
    if niter < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    # min_points_per_centroid=1: small test sets legitimately have ~2 points per class and faiss
    # would otherwise print a warning; max_points_per_centroid=n: cluster all points, no subsample.
    options = dict(seed=seed, gpu=use_gpu, verbose=False, min_points_per_centroid=1, max_points_per_centroid=n)
    centroids = None
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
    joint = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_) / n
    pt, pp = joint.sum(axis=1), joint.sum(axis=0)
    # xlogy(0, 0) = 0: empty cells contribute nothing.
    mi = float(xlogy(joint, joint).sum() - xlogy(pt, pt).sum() - xlogy(pp, pp).sum())
    if mi <= 0.0:
        return 0.0
    entropy = -(xlogy(pt, pt).sum() + xlogy(pp, pp).sum())
    return float(min(mi / (entropy / 2.0), 1.0))
