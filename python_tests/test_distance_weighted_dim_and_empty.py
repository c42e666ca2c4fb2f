"""distance_weighted_negatives' dim: None means D, anything else is an integer >= 2 (0 and False
were silently D, also where D = 1); the reference agrees, and returns the op's empty result
on an empty batch or no anchors instead of failing."""

import pytest
import torch
import torch.nn.functional as F

from diva_ext import ops, reference

SAMPLERS = [pytest.param(ops.distance_weighted_negatives, id="op"),
            pytest.param(reference.distance_weighted_negatives, id="reference")]


def batch(generator, d=4, b=6):
    x = F.normalize(torch.randn(b, d, generator=generator), dim=1)
    return x, torch.arange(b) % 3, torch.arange(b)


@pytest.mark.parametrize("sample", SAMPLERS)
@pytest.mark.parametrize("dim", [0, 1, -3])
@pytest.mark.parametrize("d", [1, 4])
def test_dim_below_two_is_refused(sample, dim, d, generator):
    with pytest.raises(ValueError, match=rf"dim must be None \(meaning D\) or an integer >= 2, got {dim}"):
        sample(*batch(generator, d), dim=dim)


@pytest.mark.parametrize("sample", SAMPLERS)
@pytest.mark.parametrize("dim", [False, True, 2.0, "3"])
def test_dim_that_is_not_an_integer_is_refused(sample, dim, generator):
    with pytest.raises(TypeError, match=r"dim must be an integer or None"):
        sample(*batch(generator), dim=dim)


@pytest.mark.parametrize("sample", SAMPLERS)
def test_none_and_integer_dims_are_accepted(sample, generator):
    x, labels, anchors = batch(generator)
    for dim in (None, 2, 3, torch.tensor(7).item()):
        out = sample(x, labels, anchors, dim=dim)
        assert out.shape == (6,) and out.dtype == torch.int64
        assert (labels[out] != labels).all()


@pytest.mark.parametrize("b,t", [(6, 0), (0, 0)])
def test_no_anchors_or_an_empty_batch_give_the_ops_empty_result(b, t, generator):
    x, labels, _ = batch(generator, b=b)
    anchors = torch.zeros(t, dtype=torch.int64)
    want = ops.distance_weighted_negatives(x, labels, anchors)
    got = reference.distance_weighted_negatives(x, labels, anchors)
    assert want.shape == got.shape == (0,) and want.dtype == got.dtype == torch.int64


def test_sample_against_an_empty_reference_set_is_all_minus_one(generator):
    x, labels, _ = batch(generator)
    got = reference.distance_weighted_sample(x, labels, x[:0], labels[:0])
    assert torch.equal(got, torch.full((6,), -1, dtype=torch.int64))
