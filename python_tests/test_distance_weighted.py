"""distance_weighted_negatives: distribution, exact picks, rules, reproducibility, registration, errors.

Oracles (python_tests/distance_weighted_oracle.py): the exact categorical w / sum w from the
design's formula in float64, and a brute-force float64 replay of the Philox noise that gives
the picks the kernel must make.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.library import opcheck

import distance_weighted_oracle as oracle
from distance_weighted_oracle import chi_square_pvalue
from tolerances import FAILURE
import diva_ext
from diva_ext import ops, reference
from conftest import requires_cuda

OP = torch.ops.diva_ext.distance_weighted_negatives.default
INF = math.inf


def unit(n, d, generator, dtype=torch.float32):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1).to(dtype)


def clustered(n_clusters, per_cluster, d, spread, generator):
    """Unit vectors in tight clusters around random centres (one label per cluster)."""
    centres = unit(n_clusters, d, generator, torch.float64)
    x = centres.repeat_interleave(per_cluster, 0) + spread * torch.randn(n_clusters * per_cluster, d, generator=generator, dtype=torch.float64)
    labels = torch.arange(n_clusters).repeat_interleave(per_cluster)
    return torch.nn.functional.normalize(x, dim=1).float(), labels


def draws_for_anchor(fn, x, labels, a, draws, **kw):
    """`draws` picks for one anchor: it is repeated in `anchors` (each position draws anew)."""
    anchors = torch.full((draws,), a, dtype=torch.int64)
    return fn(x, labels, anchors, **kw)


# ---- the sampled distribution --------------------------------------------------------------

DIST_CASES = {
    # name: (B, D, dim, lower_cutoff, upper_cutoff, data)
    "n128-plain": (128, 8, None, 0.5, INF, "random"),
    "n512-cutoffs": (512, 6, None, 0.7, 1.35, "random"),  # both cutoffs cut into the candidates
    "n512-clustered-dim": (512, 32, 24, 0.5, INF, "clustered"),
    "n128-ties": (128, 6, None, 0.3, 1.6, "ties"),  # duplicated rows: exactly tied distances
}


def make_case(name, generator):
    b, d, dim, lc, uc, data = DIST_CASES[name]
    if data == "clustered":
        x, labels = clustered(b // 8, 8, d, 0.15, generator)
    elif data == "ties":
        base = unit(b // 4, d, generator)
        x = base.repeat(4, 1)  # every row appears four times
        labels = torch.randint(0, 5, (b,), generator=generator)
    else:
        x = unit(b, d, generator)
        labels = torch.randint(0, 6, (b,), generator=generator)
    return x, labels, dict(lower_cutoff=lc, upper_cutoff=uc, dim=dim)


@pytest.mark.parametrize("name", list(DIST_CASES))
@pytest.mark.parametrize("sampler", ["ours", "reference"])
def test_distribution_matches_exact_categorical(name, sampler, generator):
    x, labels, kw = make_case(name, generator)
    fn = ops.distance_weighted_negatives if sampler == "ours" else reference.distance_weighted_negatives
    anchors = torch.randint(0, x.shape[0], (3,), generator=generator)
    probs = oracle.probabilities(x, labels, anchors, **kw)
    if name == "n512-cutoffs":  # the cutoffs must matter here, or the case tests nothing
        log_w, other = oracle.exact_log_weights(x, labels, anchors, **kw)
        dist = torch.cdist(x[anchors].double(), x.double())
        assert ((dist >= kw["upper_cutoff"]) & other).any() and ((dist < kw["lower_cutoff"]) & other).any()
    if name == "n128-ties":
        assert (probs[0][probs[0] > 0].unique().numel() < (probs[0] > 0).sum())
    for i, a in enumerate(anchors.tolist()):
        picks = draws_for_anchor(fn, x, labels, a, 20000, generator=generator, **kw)
        assert chi_square_pvalue(picks, probs[i]) > FAILURE


def test_distribution_over_successive_calls(generator):
    """Many calls, each with its own seed and offset, draw from the same categorical."""
    x, labels, kw = make_case("n128-plain", generator)
    probs = oracle.probabilities(x, labels, torch.tensor([5]), **kw)[0]
    anchors = torch.full((50,), 5)
    picks = torch.cat([ops.distance_weighted_negatives(x, labels, anchors, generator=generator, **kw) for _ in range(200)])
    assert chi_square_pvalue(picks, probs) > FAILURE


def test_chi_square_has_power(generator):
    """The test above rejects a sampler with the wrong sphere dimension: it can fail."""
    x, labels, kw = make_case("n512-clustered-dim", generator)
    a = 17
    picks = draws_for_anchor(ops.distance_weighted_negatives, x, labels, a, 20000, generator=generator, **kw)
    wrong = oracle.probabilities(x, labels, torch.tensor([a]), **dict(kw, dim=kw["dim"] + 4))[0]
    assert chi_square_pvalue(picks, wrong) < FAILURE  # (typically < 1e-25)


# ---- exact picks: the kernel against the brute-force float64 replay -------------------------

REPLAY_CASES = [
    # (B, D, T, lower, upper, dtype)
    (1, 3, 2, 0.5, INF, torch.float32),
    (2, 5, 3, 0.5, INF, torch.float32),
    (7, 4, 11, 0.5, INF, torch.float64),
    (131, 33, 97, 0.5, INF, torch.float32),
    (1031, 16, 257, 0.4, 1.3, torch.float32),  # > one column tile, odd sizes, cutoffs
    (2053, 128, 61, 0.5, INF, torch.float32),  # few anchors: the candidates are split
    (600, 64, 300, 0.5, 1.45, torch.float64),
]


@pytest.mark.parametrize("b,d,t,lc,uc,dtype", REPLAY_CASES)
def test_picks_match_brute_force_replay(b, d, t, lc, uc, dtype, generator):
    x = unit(b, d, generator, dtype)
    labels = torch.randint(0, max(1, b // 3), (b,), generator=generator)
    anchors = torch.randint(0, b, (t,), generator=generator)
    seed, offset = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    got = OP(x, labels, anchors, lc, uc, 0, seed, offset)
    want = oracle.replay(x, labels, anchors, seed, offset, lc, uc)
    assert got.dtype == torch.int64 and got.shape == (t,)
    # Float32 cosines move a pick only between candidates whose scores tie to ~1e-5.
    assert (got == want).float().mean() >= (0.99 if dtype == torch.float32 else 1.0)


def test_picks_do_not_depend_on_threads_or_other_anchors(generator):
    x = unit(3001, 24, generator)
    labels = torch.randint(0, 40, (3001,), generator=generator)
    anchors = torch.randint(0, 3001, (700,), generator=generator)
    full = OP(x, labels, anchors, 0.5, 1.4, 0, 7, 9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = OP(x, labels, anchors, 0.5, 1.4, 0, 7, 9)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(full, single)
    # Noise is keyed by the anchor's position: a prefix of the anchors draws the same prefix.
    assert torch.equal(OP(x, labels, anchors[:5], 0.5, 1.4, 0, 7, 9), full[:5])


def test_seed_and_offset_select_the_draw(generator):
    x = unit(300, 8, generator)
    labels = torch.randint(0, 10, (300,), generator=generator)
    anchors = torch.arange(300)
    a = OP(x, labels, anchors, 0.5, INF, 0, 1, 2)
    assert torch.equal(a, OP(x, labels, anchors, 0.5, INF, 0, 1, 2))  # a pure function
    assert not torch.equal(a, OP(x, labels, anchors, 0.5, INF, 0, 1, 3))
    assert not torch.equal(a, OP(x, labels, anchors, 0.5, INF, 0, 2, 2))
    assert not torch.equal(a, OP(x, labels, anchors, 0.5, INF, 0, -1, 2))  # all 64 bits count


# ---- the rules: huge spans, one class, fallback --------------------------------------------

def test_log_weights_spanning_hundreds_of_nats_keep_every_anchor(generator):
    """PML's DistanceWeightedMiner subtracts one global max (its issue #276), so in such a batch
    whole rows underflow and their anchors are lost. Per-row Gumbel-max keeps all of them."""
    d = 512
    centres = unit(16, d, generator, torch.float64)
    # Clusters 0-7 get a close neighbour cluster (distance ~0.6: log w ~ +300 in 512-d); clusters
    # 8-15 sit alone near distance sqrt(2) from everything (log w ~ 0).
    partners = torch.nn.functional.normalize(centres[:8] + 0.6 * unit(8, d, generator, torch.float64), dim=1)
    all_centres = torch.cat([centres, partners])
    x = all_centres.repeat_interleave(3, 0) + 0.01 * torch.randn(len(all_centres) * 3, d, generator=generator, dtype=torch.float64)
    x = torch.nn.functional.normalize(x, dim=1).float()
    labels = torch.arange(len(all_centres)).repeat_interleave(3)
    anchors = torch.arange(x.shape[0])
    log_w, _ = oracle.exact_log_weights(x, labels, anchors, 0.5, INF)
    row_max = log_w.max(1).values
    assert row_max.max() - row_max.min() > 150  # float32 exp(-104) is 0: a global max loses rows
    probs = oracle.probabilities(x, labels, anchors)
    for _ in range(3):
        picks = ops.distance_weighted_negatives(x, labels, anchors, generator=generator)
        assert (picks >= 0).all() and (labels[picks] != labels).all()
        # Each pick carries real probability mass (no anchor fell back to junk).
        assert probs[anchors, picks].min() > 1e-6
    # And the draws follow the exact distribution in both kinds of rows.
    for a in (0, 3 * 12):
        picks = draws_for_anchor(ops.distance_weighted_negatives, x, labels, a, 5000, generator=generator)
        assert chi_square_pvalue(picks, probs[a]) > FAILURE


def test_all_one_class_gives_minus_one(generator):
    x = unit(37, 5, generator)
    labels = torch.full((37,), 3)
    picks = ops.distance_weighted_negatives(x, labels, torch.arange(37), generator=generator)
    assert torch.equal(picks, torch.full((37,), -1))
    # Mixed: the anchors of a class covering all but one sample still get that one sample.
    labels[11] = 4
    picks = ops.distance_weighted_negatives(x, labels, torch.arange(37), generator=generator)
    assert (picks[labels == 3] == 11).all() and (labels[picks[11]] == 3)


@pytest.mark.parametrize("sampler", ["ours", "reference"])
def test_no_candidate_within_upper_cutoff_draws_uniformly(sampler, generator):
    fn = ops.distance_weighted_negatives if sampler == "ours" else reference.distance_weighted_negatives
    x = unit(97, 64, generator)  # random unit vectors in 64-d sit near distance sqrt(2)
    labels = torch.randint(0, 4, (97,), generator=generator)
    a = 5
    picks = draws_for_anchor(fn, x, labels, a, 20000, upper_cutoff=0.8, generator=generator)
    uniform = (labels != labels[a]).double()
    assert chi_square_pvalue(picks, uniform / uniform.sum()) > FAILURE


def test_fallback_only_where_needed(generator):
    """Anchors with a candidate within the cutoff draw from those; the others fall back."""
    x, labels = clustered(6, 5, 16, 0.05, generator)
    x = torch.cat([x, unit(1, 16, generator)])  # a lone point, far from every cluster
    labels = torch.cat([labels, torch.tensor([99])])
    lone = x.shape[0] - 1
    dist = torch.cdist(x.double(), x.double())
    cutoff = float(dist[lone, :lone].min()) - 1e-3  # nothing is within the cutoff of the lone point
    anchors = torch.arange(x.shape[0])
    probs = oracle.probabilities(x, labels, anchors, upper_cutoff=cutoff)
    assert torch.allclose(probs[lone, :lone], torch.full((lone,), 1.0 / lone, dtype=torch.float64))
    for _ in range(3):
        picks = ops.distance_weighted_negatives(x, labels, anchors, upper_cutoff=cutoff, generator=generator)
        assert (probs[anchors, picks] > 0).all()


# ---- reproducibility of the wrapper -----------------------------------------------------------

def test_manual_seed_reproduces_and_successive_calls_differ(generator):
    x = unit(200, 12, generator)
    labels = torch.randint(0, 9, (200,), generator=generator)
    anchors = torch.arange(200)
    torch.manual_seed(1234)
    first = ops.distance_weighted_negatives(x, labels, anchors)
    second = ops.distance_weighted_negatives(x, labels, anchors)
    torch.manual_seed(1234)
    assert torch.equal(ops.distance_weighted_negatives(x, labels, anchors), first)
    assert torch.equal(ops.distance_weighted_negatives(x, labels, anchors), second)
    assert (first != second).float().mean() > 0.5
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        ops.distance_weighted_negatives(x, labels, anchors, generator=g1),
        ops.distance_weighted_negatives(x, labels, anchors, generator=g2),
    )


# ---- inputs: layouts, empties, registration, errors --------------------------------------------

def test_non_contiguous_inputs(generator):
    x = unit(80, 10, generator).t().contiguous().t()[::2]  # column-major storage, every other row
    labels = torch.randint(0, 5, (80,), generator=generator)[::2]
    anchors = torch.arange(40)[1::2]
    assert not x.is_contiguous() and not labels.is_contiguous() and not anchors.is_contiguous()
    got = OP(x, labels, anchors, 0.5, INF, 0, 3, 4)
    assert torch.equal(got, OP(x.contiguous(), labels.contiguous(), anchors.contiguous(), 0.5, INF, 0, 3, 4))
    assert torch.equal(got, oracle.replay(x, labels, anchors, 3, 4))


def test_empty_inputs():
    x = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    labels = torch.arange(5)
    assert ops.distance_weighted_negatives(x, labels, torch.empty(0, dtype=torch.int64)).shape == (0,)
    empty = torch.empty(0, 3)
    out = ops.distance_weighted_negatives(empty, torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
    assert out.shape == (0,) and out.dtype == torch.int64


def test_opcheck(generator):
    x = unit(23, 6, generator)
    labels = torch.randint(0, 4, (23,), generator=generator)
    anchors = torch.randint(0, 23, (9,), generator=generator)
    opcheck(OP, (x, labels, anchors, 0.5, INF, 0, 11, 12))
    opcheck(OP, (x.double(), labels, anchors, 0.3, 1.2, 4, 11, 12))


def test_torch_compile_fullgraph(generator):
    torch._dynamo.reset()
    x = unit(41, 7, generator)
    labels = torch.randint(0, 5, (41,), generator=generator)

    @torch.compile(fullgraph=True)
    def mine(emb, lab):
        anchors = torch.arange(emb.shape[0])
        neg = torch.ops.diva_ext.distance_weighted_negatives(emb, lab, anchors, 0.5, 1.4, 0, 21, 22)
        return neg, lab[neg.clamp_min(0)] != lab

    neg, differs = mine(x, labels)
    assert torch.equal(neg, OP(x, labels, torch.arange(41), 0.5, 1.4, 0, 21, 22))
    assert differs.all()


def _x(n=6, d=4):
    return torch.nn.functional.normalize(torch.randn(n, d), dim=1)


@pytest.mark.parametrize(
    "args,pattern",
    [
        ((torch.randn(6), torch.arange(6), torch.arange(2)), r"x must be a 2-D tensor"),
        ((torch.ones(6, 4, dtype=torch.int64), torch.arange(6), torch.arange(2)), r"x must be float32 or float64"),
        ((_x(), torch.arange(5), torch.arange(2)), r"labels must have one entry per row of x \(6\), got 5"),
        ((_x(), torch.arange(6).int(), torch.arange(2)), r"labels must be int64"),
        ((_x(), torch.arange(6).view(2, 3), torch.arange(2)), r"labels must be a 1-D tensor"),
        ((_x(), torch.arange(6), torch.tensor([0, 6])), r"anchors must index rows of x, in \[0, 6\), got values in \[0, 6\]"),
        ((_x(), torch.arange(6), torch.tensor([-1, 2])), r"anchors must index rows of x"),
        ((_x(), torch.arange(6), torch.tensor([0.0, 1.0])), r"anchors must be int64"),
        ((_x(), torch.arange(6), torch.arange(2).view(1, 2)), r"anchors must be a 1-D tensor"),
        ((_x().index_fill(0, torch.tensor([2]), math.nan), torch.arange(6), torch.arange(2)), r"x must be finite"),
        ((_x().index_fill(0, torch.tensor([3]), math.inf), torch.arange(6), torch.arange(2)), r"x must be finite"),
        ((3 * _x(), torch.arange(6), torch.arange(2)), r"x rows must be L2-normalised"),
        ((torch.empty(0, 4), torch.empty(0, dtype=torch.int64), torch.tensor([0])), r"x has no rows"),
        ((_x(), torch.arange(6), torch.arange(2, device="meta")), r"same device"),
    ],
)
def test_bad_inputs_name_the_argument(args, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        ops.distance_weighted_negatives(*args)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        (dict(lower_cutoff=0.0), r"lower_cutoff must be finite and > 0"),
        (dict(lower_cutoff=-1.0), r"lower_cutoff must be finite and > 0"),
        (dict(lower_cutoff=math.nan), r"lower_cutoff must be finite and > 0"),
        (dict(lower_cutoff=math.inf), r"lower_cutoff must be finite and > 0"),
        (dict(upper_cutoff=0.0), r"upper_cutoff must be > 0"),
        (dict(upper_cutoff=math.nan), r"upper_cutoff must be > 0"),
    ],
)
def test_bad_scalars_name_the_argument(kw, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        ops.distance_weighted_negatives(_x(), torch.arange(6), torch.arange(2), **kw)


def test_registered_op_names_a_negative_dim():
    # The wrapper refuses dim < 2 itself (test_distance_weighted_dim_and_empty.py); the registered
    # op, callable directly, checks too.
    with pytest.raises(RuntimeError, match=r"dim must be >= 0"):
        torch.ops.diva_ext.distance_weighted_negatives(_x(), torch.arange(6), torch.arange(2), 0.5, math.inf, -3, 0, 0)


# ---- Philox4x32-10 known answers (Random123's kat_vectors) ------------------------------------

@pytest.mark.parametrize(
    "counter,key,expected",
    [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    got = torch.ops.diva_ext._philox4x32_10(torch.tensor([counter]), torch.tensor(key))
    assert got[0].tolist() == expected
    # The test oracle's NumPy Philox agrees (it replays the kernels' noise).
    assert [int(v) for v in oracle.philox4x32_10(*counter, *key)] == expected


def test_philox_words_are_uniform(generator):
    counters = torch.stack([torch.arange(4096), torch.full((4096,), 7), torch.zeros(4096, dtype=torch.int64), torch.zeros(4096, dtype=torch.int64)], 1)
    words = torch.ops.diva_ext._philox4x32_10(counters, torch.tensor([1, 2])).flatten()
    top = (words >> 28).numpy()  # 16 bins of the top nibble
    assert chisquare(np.bincount(top, minlength=16)).pvalue > FAILURE


# ---- CUDA (skipped without a GPU) ----------------------------------------------------------------

@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("b,d,t", [(1, 3, 1), (129, 33, 300), (2053, 128, 61), (4100, 64, 4100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(b, d, t, dtype, generator):
    x = unit(b, d, generator, torch.float64).to(dtype)
    labels = torch.randint(0, max(1, b // 3), (b,), generator=generator)
    anchors = torch.randint(0, b, (t,), generator=generator)
    half = dtype in (torch.float16, torch.bfloat16)
    # The CPU kernel takes float32/float64: the rounded half rows, renormalised, in float64.
    cpu_x = torch.nn.functional.normalize(x.double(), dim=1) if half else x
    want = OP(cpu_x, labels, anchors, 0.5, 1.4, 0, 5, 6)
    got = OP(x.cuda(), labels.cuda(), anchors.cuda(), 0.5, 1.4, 0, 5, 6).cpu()
    assert (got == want).float().mean() >= (0.95 if half else 0.99)


@requires_cuda
@pytest.mark.cuda
def test_cuda_runs_on_current_stream(generator):
    x = unit(3000, 64, generator).cuda()
    labels = torch.randint(0, 100, (3000,), generator=generator).cuda()
    anchors = torch.arange(3000).cuda()
    want = OP(x, labels, anchors, 0.5, INF, 0, 1, 2)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = OP(x, labels, anchors, 0.5, INF, 0, 1, 2)
    s.synchronize()
    assert torch.equal(got.cpu(), want.cpu())


def test_cuda_kernel_registered_with_the_others():
    has = torch._C._dispatch_has_kernel_for_dispatch_key("diva_ext::distance_weighted_negatives", "CUDA")
    assert has == diva_ext.cuda_built()
