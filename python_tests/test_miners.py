"""diva_ext.miners: the triplets' structure, their distributions, reproducibility, PML interop."""

import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

import distance_weighted_oracle as oracle
from diva_ext import miners
from distance_weighted_oracle import chi_square_pvalue

INF = math.inf


def batch(classes, per_class, d, generator):
    x = torch.randn(classes * per_class, d, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    perm = torch.randperm(classes * per_class, generator=generator)  # classes interleaved
    return x[perm], labels[perm]


def check_triplets(triplets, labels, ref_labels=None, n_ref=None):
    ref_labels = labels if ref_labels is None else ref_labels
    a, p, n = triplets
    assert all(t.dtype == torch.int64 and t.dim() == 1 and not t.requires_grad for t in triplets)
    assert a.shape == p.shape == n.shape
    assert (labels[a] == ref_labels[p]).all()
    assert (labels[a] != ref_labels[n]).all()
    assert (a >= 0).all() and (a < labels.numel()).all()
    assert (n >= 0).all() and (n < (n_ref or ref_labels.numel())).all()


# ---- DistanceWeightedMiner -------------------------------------------------------------------

@pytest.mark.parametrize("ops", ["fused", "reference"])
def test_positives_one_gives_each_anchor_one_partner(ops, generator):
    x = torch.randn(13, 6, generator=generator, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5])  # classes 2 and 4 are singletons
    a, p, n = miners.DistanceWeightedMiner(generator=generator, ops=ops)(x, labels)
    check_triplets((a, p, n), labels)
    assert sorted(a.tolist()) == [i for i in range(13) if i not in (5, 10)]
    assert (a != p).all()


def test_positives_all_gives_every_pair(generator):
    x = torch.randn(13, 6, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5])
    a, p, n = miners.DistanceWeightedMiner(positives="all", generator=generator)(x, labels)
    check_triplets((a, p, n), labels)
    want = {(i, j) for i in range(13) for j in range(13) if i != j and labels[i] == labels[j]}
    assert sorted(zip(a.tolist(), p.tolist())) == sorted(want)


def test_positive_is_uniform_among_partners(generator):
    x = torch.randn(12, 4, generator=generator)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    miner = miners.DistanceWeightedMiner(generator=generator)
    counts = Counter()
    for _ in range(200):
        a, p, _ = miner(x, labels)
        counts.update(p[a == 2].tolist())
    assert set(counts) == {0, 1, 3, 4}
    assert chisquare([counts[j] for j in (0, 1, 3, 4)]).pvalue > 1e-4


@pytest.mark.parametrize("ops", ["fused", "reference"])
def test_negatives_follow_distance_weights(ops, generator):
    x, labels = batch(20, 3, 8, generator)
    x = torch.cat([x, torch.randn(60, 8, generator=generator)])  # a big class: 59 triplets per anchor
    labels = torch.cat([labels, torch.full((60,), 20)])
    miner = miners.DistanceWeightedMiner(lower_cutoff=0.5, upper_cutoff=1.5, positives="all", generator=generator, ops=ops)
    a0 = 70
    probs = oracle.probabilities(torch.nn.functional.normalize(x, dim=1), labels, torch.tensor([a0]), 0.5, 1.5)[0]
    picks = torch.cat([_negatives_of(miner, x, labels, a0) for _ in range(50)])
    assert chi_square_pvalue(picks, probs) > 1e-4


def _negatives_of(miner, x, labels, anchor, *ref):
    a, _, n = miner(x, labels, *ref)
    return n[a == anchor]


def test_cross_batch_memory(generator):
    """a indexes the batch; p and n index the reference set (the cross-batch-memory use)."""
    x, labels = batch(6, 2, 8, generator)
    ref, ref_labels = batch(10, 4, 8, generator)
    ref = torch.cat([ref, torch.randn(60, 8, generator=generator)])
    ref_labels = torch.cat([ref_labels, torch.full((60,), 3)])  # label 3 has 64 rows in ref
    miner = miners.DistanceWeightedMiner(positives="all", generator=generator)
    a, p, n = miner(x, labels, ref, ref_labels)
    check_triplets((a, p, n), labels, ref_labels)
    # every partner in ref (the anchor itself is not there) makes a triplet
    want = Counter({i: int((ref_labels == labels[i]).sum()) for i in range(12)})
    assert Counter(a.tolist()) == want
    # the negatives follow the weights among ref rows
    anchor = int(torch.nonzero(labels == 3)[0])
    q = torch.nn.functional.normalize(x, dim=1)
    r = torch.nn.functional.normalize(ref, dim=1)
    both = torch.cat([q[anchor:anchor + 1], r])
    probs = oracle.probabilities(both, torch.cat([labels[anchor:anchor + 1], ref_labels]), torch.tensor([0]))[0, 1:]
    picks = torch.cat([_negatives_of(miner, x, labels, anchor, ref, ref_labels) for _ in range(50)])
    assert chi_square_pvalue(picks, probs) > 1e-4


def test_anchors_without_negatives_are_dropped(generator):
    x = torch.randn(8, 4, generator=generator)
    labels = torch.zeros(8, dtype=torch.int64)
    a, p, n = miners.DistanceWeightedMiner(generator=generator)(x, labels)
    assert a.numel() == p.numel() == n.numel() == 0


def test_generator_reproduces_and_successive_calls_differ(generator):
    x, labels = batch(16, 4, 12, generator)
    m1 = miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(3))
    m2 = miners.DistanceWeightedMiner(generator=torch.Generator().manual_seed(3))
    first, second = m1(x, labels), m1(x, labels)
    assert all(torch.equal(u, v) for u, v in zip(first, m2(x, labels)))
    assert not torch.equal(first[2], second[2])
    torch.manual_seed(9)
    default = miners.DistanceWeightedMiner()(x, labels)
    torch.manual_seed(9)
    assert all(torch.equal(u, v) for u, v in zip(default, miners.DistanceWeightedMiner()(x, labels)))


def test_runs_without_grad_and_keeps_the_graph_intact(generator):
    x = torch.randn(10, 4, generator=generator, requires_grad=True)
    labels = torch.arange(5).repeat(2)
    for miner in (miners.DistanceWeightedMiner(generator=generator), miners.SharedMiner(generator=generator),
                  miners.IntraClassMiner(generator=generator)):
        triplets = miner(x * 2, labels)
        assert all(not t.requires_grad and t.grad_fn is None for t in triplets)


# ---- SharedMiner ----------------------------------------------------------------------------

def test_shared_is_distance_weighted_mining_on_permuted_labels(generator):
    x, labels = batch(12, 2, 8, generator)
    got = miners.SharedMiner(generator=torch.Generator().manual_seed(4))(x, labels)
    g = torch.Generator().manual_seed(4)
    permuted = labels[torch.randperm(24, generator=g)]
    want = miners.DistanceWeightedMiner(generator=g)(x, permuted)
    assert all(torch.equal(u, v) for u, v in zip(got, want))
    check_triplets(got, permuted)


def test_shared_pairs_cut_across_true_classes(generator):
    x, labels = batch(16, 2, 8, generator)
    miner = miners.SharedMiner(generator=generator)
    same = total = 0
    for _ in range(50):
        a, p, _ = miner(x, labels)
        same += (labels[a] == labels[p]).sum().item()
        total += a.numel()
    # A random partner shares the true class with probability 1/31; true-class mining gives 1.
    assert total == 50 * 32 and same / total < 0.1


# ---- IntraClassMiner ------------------------------------------------------------------------

def test_intra_class_triplets(generator):
    x = torch.randn(18, 4, generator=generator)
    labels = torch.tensor([0] + [1] * 2 + [2] * 5 + [3] * 10)  # unequal classes
    miner = miners.IntraClassMiner(generator=generator)
    classes, anchors_of_3 = Counter(), Counter()
    for _ in range(100):
        a, p, n = miner(x, labels)
        assert a.numel() == 18
        assert (labels[a] == labels[p]).all() and (labels[a] == labels[n]).all()
        classes.update(labels[a].tolist())
        anchors_of_3.update(a[labels[a] == 3].tolist())
    # the class is uniform over the batch's classes (not proportional to its size) ...
    assert chisquare([classes[c] for c in range(4)]).pvalue > 1e-4
    # ... and the sample uniform within it
    assert chisquare([anchors_of_3[i] for i in range(8, 18)]).pvalue > 1e-4


def test_intra_class_with_reference_set(generator):
    x = torch.randn(6, 4, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = torch.randn(9, 4, generator=generator)
    ref_labels = torch.tensor([1, 1, 1, 2, 2, 3, 3, 3, 3])  # class 0 absent: never drawn
    a, p, n = miners.IntraClassMiner(generator=generator)(x, labels, ref, ref_labels)
    assert a.numel() == 6
    assert (labels[a] == ref_labels[p]).all() and (labels[a] == ref_labels[n]).all()
    assert (labels[a] != 0).all()


# ---- inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: miners.DistanceWeightedMiner(positives="some"), r"positives must be 'one' or 'all'"),
        (lambda: miners.DistanceWeightedMiner(ops="fast"), r"ops must be one of"),
        (lambda: miners.DistanceWeightedMiner(lower_cutoff=0.0), r"lower_cutoff must be finite and > 0"),
        (lambda: miners.DistanceWeightedMiner(upper_cutoff=-1.0), r"upper_cutoff must be > 0"),
    ],
)
def test_bad_settings(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize(
    "args,pattern",
    [
        ((torch.randn(6), torch.arange(6)), r"embeddings must be a 2-D tensor"),
        ((torch.randn(6, 3), torch.arange(5)), r"labels must have one entry per row of embeddings \(6\), got 5"),
        ((torch.randn(6, 3), torch.rand(6)), r"labels must be a 1-D integer tensor"),
        ((torch.randn(6, 3), torch.arange(6), torch.randn(4, 3)), r"ref_emb and ref_labels must be given together"),
        ((torch.randn(6, 3), torch.arange(6), torch.randn(4, 2), torch.arange(4)), r"ref_emb must match"),
    ],
)
@pytest.mark.parametrize("miner", [miners.DistanceWeightedMiner(), miners.SharedMiner(), miners.IntraClassMiner()])
def test_bad_inputs_name_the_argument(miner, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        miner(*args)


# ---- pytorch-metric-learning interop ----------------------------------------------------------

def test_our_triplets_feed_pml_losses(generator):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    x, labels = batch(10, 3, 16, generator)
    x = torch.nn.functional.normalize(x, dim=1).requires_grad_()
    triplets = miners.DistanceWeightedMiner(positives="all", generator=generator)(x, labels)
    a, p, n = triplets
    d_ap = (x[a] - x[p]).norm(dim=1)
    d_an = (x[a] - x[n]).norm(dim=1)
    got = pml_losses.TripletMarginLoss(margin=0.1)(x, labels, triplets)
    want = torch.relu(d_ap - d_an + 0.1)
    torch.testing.assert_close(got, want[want > 0].mean())
    got = pml_losses.MarginLoss(margin=0.2, beta=1.2)(x, labels, triplets)
    terms = torch.cat([torch.relu(d_ap - 1.2 + 0.2), torch.relu(1.2 - d_an + 0.2)])
    torch.testing.assert_close(got, torch.relu(d_ap - 1.2 + 0.2).add(torch.relu(1.2 - d_an + 0.2)).sum() / (terms > 0).sum())
    got.backward()
    assert torch.isfinite(x.grad).all()
