"""DiVA's triplet miners (docs/design.md §2.4), with pytorch-metric-learning's calling convention.

``miner(embeddings, labels, ref_emb=None, ref_labels=None) -> (a, p, n)``: int64 index tensors
on the embeddings' device; ``a`` indexes ``embeddings``, ``p`` and ``n`` index ``ref_emb`` (the
embeddings themselves when it is None; a separate reference set is the cross-batch-memory use).
So the tuples feed pytorch-metric-learning's losses, and its miners' tuples feed ours. Mining
runs under ``torch.no_grad()``; every random choice comes from the miner's ``generator`` (the
default generator when None), so ``torch.manual_seed`` or a seeded generator reproduces it.

Inputs: ``embeddings`` [B, D] and ``ref_emb`` [R, D] floating (finite for the distance-weighted
miners, which read them), ``labels`` [B] and ``ref_labels`` [R] integer; a wrong one is a
ValueError naming it. An empty batch or reference set gives empty triplets, which every loss of
diva_ext.losses turns into a zero that keeps the graph.

- DistanceWeightedMiner: distance-weighted negatives (Wu et al. 2017); DiVA's discriminative task.
- SharedMiner: the same on labels permuted within the batch; DiVA's shared-characteristics task.
- IntraClassMiner: triplets drawn inside one class; DiVA's intra-class task.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from diva_ext import _validation as _check
from diva_ext import ops, reference

Triplets = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
_OPS = ("fused", "reference")


def _inputs(embeddings, labels, ref_emb, ref_labels, *, finite=True):
    """Validated (embeddings, labels, ref, ref_labels, self_ref), labels int64 on the device;
    with ``finite``, the embeddings (and ref_emb) must hold no NaN or inf."""
    embeddings = _check.matrix(embeddings, "embeddings")
    labels = _check.label_vector(labels, "labels", embeddings.shape[0], "embeddings")
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    labels = labels.to(device=embeddings.device, dtype=torch.int64)
    self_ref = ref_emb is None or (ref_emb is embeddings and ref_labels is labels)
    if self_ref:
        ref_emb, ref_labels = embeddings, labels
    else:
        _check.matrix(ref_emb, "ref_emb", like=embeddings, like_name="embeddings")
        ref_labels = _check.label_vector(ref_labels, "ref_labels", ref_emb.shape[0], "ref_emb")
        ref_labels = ref_labels.to(device=embeddings.device, dtype=torch.int64)
    if finite:
        _check.check_values(finite=[("embeddings", embeddings)] + ([] if self_ref else [("ref_emb", ref_emb)]))
    return embeddings, labels, ref_emb, ref_labels, self_ref


def _unit(x):
    """L2-normalised rows in a dtype the op takes on x's device (float16/bfloat16: CUDA only)."""
    if x.device.type == "cpu" and x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return F.normalize(x.detach(), dim=1)


def _uniform_below(counts, generator):
    """Per entry, a uniform integer in [0, counts) (counts >= 1), on counts' device."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(counts.shape, generator=generator, device=device, dtype=torch.float64).to(counts.device)
    return torch.minimum((u * counts).long(), counts - 1)


def _randperm(n, generator, device):
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


def _device_generator(generator, device):
    """A generator on `device` seeded from `generator` (reference sampling needs one there)."""
    if generator is not None and generator.device == torch.device(device):
        return generator
    seed = ops._seed_and_offset(generator)[0]
    return torch.Generator(device=device).manual_seed(seed)


class _Runs:
    """The rows of a label vector grouped by label: in label-sorted order (`order`), the rows of
    label l are the positions lo[l] .. hi[l] - 1. Queries are looked up by their labels."""

    def __init__(self, ref_labels, query_labels):
        self.order = torch.argsort(ref_labels, stable=True)
        sorted_labels = ref_labels[self.order]
        self.lo = torch.searchsorted(sorted_labels, query_labels, right=False)
        self.hi = torch.searchsorted(sorted_labels, query_labels, right=True)

    def rank(self):
        """Position of each ref row in the sorted order."""
        rank = torch.empty_like(self.order)
        rank[self.order] = torch.arange(self.order.numel(), device=self.order.device)
        return rank


def anchor_positive_pairs(labels, ref_labels, self_ref, positives, generator=None):
    """(a, p): anchors (rows of the batch with a same-label partner in ref, itself excluded when
    ref is the batch) and positives, one drawn uniformly per anchor ("one", DiVA) or every
    partner ("all", Wu et al.). O((B + R) log R), no [B, R] mask."""
    runs = _Runs(ref_labels, labels)
    count = runs.hi - runs.lo
    self_pos = runs.rank() if self_ref else None
    if self_ref:
        count = count - 1
    a = torch.nonzero(count > 0).flatten()
    if positives == "one":
        a_rep = a
        pos = runs.lo[a] + _uniform_below(count[a], generator)
    else:
        reps = count[a]
        a_rep = torch.repeat_interleave(a, reps)
        starts = torch.cumsum(reps, 0) - reps
        within = torch.arange(a_rep.numel(), device=a.device) - torch.repeat_interleave(starts, reps)
        pos = runs.lo[a_rep] + within
    if self_ref:
        pos = pos + (pos >= self_pos[a_rep]).long()  # skip the anchor's own position
    return a_rep, runs.order[pos]


class DistanceWeightedMiner:
    """Distance-weighted triplet mining (Wu et al. 2017; DiVA's discriminative task).

    Every row with a same-class partner is an anchor; it gets one uniformly drawn positive
    (``positives="one"``, DiVA) or one triplet per positive (``"all"``, Wu et al. and
    pytorch-metric-learning). Each triplet's negative is drawn with probability proportional to
    ``d^(2-n) (1 - d^2/4)^(-(n-3)/2)`` among the other-label rows closer than ``upper_cutoff``
    (distances below ``lower_cutoff`` count as it), uniformly among the other-label rows when none
    is that close; triplets of anchors without any other-label row are dropped. Embeddings are
    L2-normalised first.

    Args:
        lower_cutoff, upper_cutoff: as in diva_ext.ops.distance_weighted_negatives, and as in
            DaNCELoss: 0 < lower_cutoff <= upper_cutoff, lower finite, upper inf for none.
        dim: the sphere's dimension n in the weight, an integer >= 1; None means D.
        positives: "one" or "all".
        generator: source of all random choices (the default generator when None).
        ops: "fused" (diva_ext.ops, the fused kernel) or "reference" (diva_ext.reference, plain
            PyTorch). With a separate ``ref_emb`` the candidates are not the batch, which the
            fused kernel's contract is about, so negatives come from the reference sampler.
    """

    def __init__(self, lower_cutoff: float = 0.5, upper_cutoff: float = math.inf, positives: str = "one", *,
                 dim: Optional[int] = None, generator: Optional[torch.Generator] = None, ops: str = "fused"):
        if positives not in ("one", "all"):
            raise ValueError(f"positives must be 'one' or 'all', got {positives!r}")
        if ops not in _OPS:
            raise ValueError(f"ops must be one of {_OPS}, got {ops!r}")
        self.lower_cutoff, self.upper_cutoff = _check.cutoffs(lower_cutoff, upper_cutoff)
        self.dim = None if dim is None else _check.integer(dim, "dim")
        self.generator = _check.generator(generator)
        self.positives, self.ops = positives, ops

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: Optional[torch.Tensor] = None,
                 ref_labels: Optional[torch.Tensor] = None) -> Triplets:
        with torch.no_grad():
            emb, labels, ref, ref_labels, self_ref = _inputs(embeddings, labels, ref_emb, ref_labels)
            return self._mine(emb, labels, ref, ref_labels, self_ref)

    def _mine(self, emb, labels, ref, ref_labels, self_ref) -> Triplets:
        a, p = anchor_positive_pairs(labels, ref_labels, self_ref, self.positives, self.generator)
        if a.numel() == 0:  # nothing to sample for (the reference sampler needs a query and a candidate)
            return a, p, a.clone()
        x = _unit(emb)
        kw = dict(lower_cutoff=self.lower_cutoff, upper_cutoff=self.upper_cutoff, dim=self.dim)
        if self_ref and self.ops == "fused":
            n = ops.distance_weighted_negatives(x, labels, a, generator=self.generator, **kw)
        else:
            ref_x = x if self_ref else _unit(ref).to(x.dtype)
            n = reference.distance_weighted_sample(x[a], labels[a], ref_x, ref_labels,
                                                   generator=_device_generator(self.generator, x.device), **kw)
        keep = n >= 0
        return a[keep], p[keep], n[keep]


class SharedMiner:
    """DiVA's shared-characteristics miner: the labels are permuted at random within the batch,
    then distance-weighted mining runs on the permuted labels, so the "classes" it separates
    are random groups and the embedding learns what samples share across true classes.

    With a separate ``ref_emb``, ``labels`` and ``ref_labels`` are permuted independently. The
    arguments are DistanceWeightedMiner's.
    """

    def __init__(self, lower_cutoff: float = 0.5, upper_cutoff: float = math.inf, positives: str = "one", *,
                 dim: Optional[int] = None, generator: Optional[torch.Generator] = None, ops: str = "fused"):
        self.generator = _check.generator(generator)
        self.miner = DistanceWeightedMiner(lower_cutoff, upper_cutoff, positives, dim=dim, generator=generator,
                                           ops=ops)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: Optional[torch.Tensor] = None,
                 ref_labels: Optional[torch.Tensor] = None) -> Triplets:
        with torch.no_grad():
            emb, labels, ref, ref_labels, self_ref = _inputs(embeddings, labels, ref_emb, ref_labels)
            permuted = labels[_randperm(labels.numel(), self.generator, labels.device)]
            if self_ref:
                return self.miner._mine(emb, permuted, emb, permuted, True)
            ref_permuted = ref_labels[_randperm(ref_labels.numel(), self.generator, ref_labels.device)]
            return self.miner._mine(emb, permuted, ref, ref_permuted, False)


class IntraClassMiner:
    """DiVA's intra-class miner: B triplets (B = len(embeddings)); for each, a class is drawn
    uniformly among the batch's classes (those also in ref), then a, p and n uniformly with
    replacement among that class's samples (a from the batch, p and n from ref). It reads only
    the labels, so the embeddings' values (finite or not) do not matter to it."""

    def __init__(self, *, generator: Optional[torch.Generator] = None):
        self.generator = _check.generator(generator)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: Optional[torch.Tensor] = None,
                 ref_labels: Optional[torch.Tensor] = None) -> Triplets:
        with torch.no_grad():
            emb, labels, _, ref_labels, _ = _inputs(embeddings, labels, ref_emb, ref_labels, finite=False)
            classes = torch.unique(labels)
            in_batch = _Runs(labels, classes)
            in_ref = _Runs(ref_labels, classes)
            usable = in_ref.hi > in_ref.lo  # a class must have samples on both sides
            classes = torch.nonzero(usable).flatten()
            b = labels.numel()
            if classes.numel() == 0 or b == 0:
                empty = torch.empty(0, dtype=torch.int64, device=labels.device)
                return empty, empty.clone(), empty.clone()
            pick = classes[_uniform_below(torch.full((b,), classes.numel(), device=labels.device), self.generator)]

            def draw(runs):
                return runs.order[runs.lo[pick] + _uniform_below(runs.hi[pick] - runs.lo[pick], self.generator)]

            return draw(in_batch), draw(in_ref), draw(in_ref)
