"""k-means in torch: seeded k-means++ initialisation and a fixed number of Lloyd iterations.

Both run on the embeddings' device in blocks sized from a memory budget, so N x k never exists.

k-means++ (Arthur & Vassilvitskii 2007) draws each centre with probability proportional to
D(x)^2, the squared distance to the nearest centre so far. Done literally that is k passes over
the data (one matrix-vector product each): ~11k passes over 60k x 512 floats for SOP. Here the
draws come in blocks with the *same* distribution: D^2 is refreshed only at the end of a block
(one GEMM against the block's centres), and within a block a candidate proposed from the stale
D_s^2 is accepted with probability D^2 / D_s^2 (D^2 <= D_s^2 as centres only get added), where D^2
includes the block's centres accepted so far. Rejection sampling: every accepted centre is an
exact draw from the current D^2 distribution, as one at a time would be.
"""

from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from diva_ext.evaluation._progress import tqdm_disable
from diva_ext.evaluation.knn_torch import BLOCK_BYTES, squared_norms

# float32 unit roundoff u. The expansion |x|^2 + |c|^2 - 2 <x, c> errs by at most
# (2 gamma_D + 4u)(|x|^2 + |c|^2) ~ 2 (D + 2) u (|x|^2 + |c|^2) (Higham: an inner product of length
# D errs by gamma_D = D u / (1 - D u) times |x| |c|; 2 |x| |c| <= |x|^2 + |c|^2), so a squared distance
# below that carries no information: it is set to 0, so that a centre (or a duplicate of one) is
# not drawn again on rounding noise.
_UNIT_ROUNDOFF = 2.0**-24


def _squared_distances(x: torch.Tensor, norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[N, c] squared distances of x's rows to ``centres`` [c, D], 0 below the rounding bound."""
    centre_norms = centres.pow(2).sum(1)
    d2 = torch.addmm(norms[:, None] + centre_norms[None, :], x, centres.t(), alpha=-2.0)
    noise = 2 * (x.shape[1] + 2) * _UNIT_ROUNDOFF * (norms[:, None] + centre_norms[None, :])
    return d2.masked_fill_(d2 <= noise, 0.0)


def kmeans_plus_plus(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    *,
    block_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> torch.Tensor:
    """Indices of k k-means++ centres among x's rows, drawn with ``generator`` (a CPU generator).

    Args:
        x: [N, D] float32 tensor, any device; N >= k >= 1.
        k: number of centres.
        generator: CPU torch.Generator; the same seed and data give the same centres on any device
            (up to the rounding of D^2 in the device's GEMM).
        block_size: centres drawn per D^2 refresh. Default: 1 at first, then a quarter of the
            centres drawn so far, at most what keeps a refresh within BLOCK_BYTES. 1 is the
            textbook algorithm, which every block size reproduces in distribution.
        progress: tqdm bar over the centres drawn.

    Returns:
        int64 [k] CPU tensor of distinct row indices (as long as x has k distinct rows; when every
        row coincides with a centre already, the rest are drawn uniformly among the unused rows).
    """
    n = x.shape[0]
    # A refresh holds [N, block] float32 distances, their rounding floor and a mask: 12 bytes each.
    cap = max(1, BLOCK_BYTES // (12 * n))
    norms = squared_norms(x)
    chosen = torch.empty(k, dtype=torch.int64)
    chosen[0] = torch.randint(n, (1,), generator=generator)
    count = 1
    d2 = _squared_distances(x, norms, x[chosen[:1].to(x.device)])[:, 0]
    bar = tqdm(total=k, desc="k-means++", unit="centre", leave=False, disable=tqdm_disable(progress, k // cap + 1))
    bar.update(1)
    while count < k:
        # Start with single draws; grow the block with the number of centres, since each new
        # centre then changes D^2 (and so the acceptance rate) less.
        block = min(k - count, block_size or min(cap, max(1, count // 4)))
        weights = d2.double().cpu()
        cdf = weights.cumsum(0)
        total = float(cdf[-1])
        if total <= 0.0:
            unused = torch.ones(n, dtype=torch.bool)
            unused[chosen[:count]] = False
            rest = unused.nonzero()[:, 0]
            chosen[count:] = rest[torch.randperm(rest.numel(), generator=generator)[: k - count]]
            break
        new = _draw_block(x, weights, cdf, total, block, generator)
        chosen[count : count + new.numel()] = new
        count += new.numel()
        bar.update(new.numel())
        if count < k:
            d2 = torch.minimum(d2, _squared_distances(x, norms, x[new.to(x.device)]).amin(1))
    bar.close()
    return chosen


def _draw_block(x, weights, cdf, total, block, generator) -> torch.Tensor:
    """Up to ``block`` centres (at least one) from the D^2 distribution, D^2 stale by this block.

    Candidates are i.i.d. from the stale weights (inverse CDF); the accept test of each uses its
    squared distances to the block's centres accepted before it, computed like D^2 itself (so a
    repeat or a duplicate of an accepted centre is at exactly 0 and is always rejected).
    """
    proposals = 2 * block + 8
    uniforms = torch.rand(proposals, 2, dtype=torch.float64, generator=generator)
    # right=True skips zero-weight rows; the clamp catches u * total rounding up to total.
    last = int(weights.nonzero()[-1, 0])
    candidates = torch.searchsorted(cdf, uniforms[:, 0] * total, right=True).clamp_(max=last)
    rows = x[candidates.to(x.device)]
    between = _squared_distances(rows, squared_norms(rows), rows).double().cpu().numpy()
    stale = weights[candidates].numpy()
    current = stale.copy()
    accept_u = uniforms[:, 1].numpy()
    accepted = []
    for j in range(proposals):
        # P(accept) = current / stale; the first candidate has current == stale: always taken.
        if accept_u[j] * stale[j] < current[j]:
            accepted.append(j)
            np.minimum(current, between[j], out=current)
            if len(accepted) == block:
                break
    return candidates[accepted]


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """int64 [N] index of each row's nearest centroid (lowest index among computed ties)."""
    k = centroids.shape[0]
    centroid_norms = centroids.pow(2).sum(1)
    rows = max(1, BLOCK_BYTES // (8 * k))  # float32 scores + argmin's workspace
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], rows):
        scores = torch.addmm(centroid_norms.unsqueeze(0), x[start : start + rows], centroids.t(), alpha=-2.0)
        out[start : start + rows] = scores.argmin(1)
    return out


def lloyd(x: torch.Tensor, centroids: torch.Tensor, niter: int, progress: Optional[bool] = None) -> torch.Tensor:
    """``niter`` Lloyd iterations from ``centroids`` [k, D]; returns the final assignment.

    Each iteration assigns every row to its nearest centroid and moves each centroid to the mean
    of its rows (summed in float64, so that the order of the additions, parallel on CUDA, can change
    the float32 centroid only if its float64 value lies within ~1e-16 relative of a rounding
    boundary). A centroid that loses all its rows stays where it is (faiss instead
    splits a large cluster; k-means++ starts with no empty cluster, so this is rare).

    Returns:
        int64 [N] cluster of each row under the centroids after the last iteration, in [0, k).
    """
    k, dim = centroids.shape
    centroids = centroids.clone()
    rows = max(1, BLOCK_BYTES // (8 * dim))
    bar = tqdm(range(niter), desc="k-means", unit="iter", leave=False, disable=tqdm_disable(progress, niter))
    for _ in bar:
        assignment = nearest_centroid(x, centroids)
        sums = torch.zeros(k, dim, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], rows):
            # index_put_ rather than index_add_: the same sums, but index_add_'s parallel CPU path
            # took ~170 ms per call on 2 busy cores whatever the size (index_put_: ~15 ms).
            sums.index_put_((assignment[start : start + rows],), x[start : start + rows].double(), accumulate=True)
        counts = torch.bincount(assignment, minlength=k)
        means = (sums / counts.clamp(min=1).unsqueeze(1)).float()
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
    return nearest_centroid(x, centroids)
