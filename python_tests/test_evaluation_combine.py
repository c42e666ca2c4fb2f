"""combine_embeddings: weighted, concatenated, re-normalised heads."""

import pytest
import torch
import torch.nn.functional as F

from diva_ext.evaluation import combine_embeddings


def _heads(n=7, dims=(3, 5, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"h{i}": torch.randn(n, d, generator=g) * (i + 1) for i, d in enumerate(dims)}


def test_unweighted_is_normalised_concatenation_of_normalised_heads():
    heads = _heads()
    expected = F.normalize(torch.cat([F.normalize(h, dim=1) for h in heads.values()], dim=1), dim=1)
    out = combine_embeddings(heads)
    assert out.shape == (7, 10)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


def test_weights_set_each_head_share():
    heads = _heads()
    out = combine_embeddings(heads, {"h0": 2.0, "h1": 1.0, "h2": 0.0})
    blocks = out.split([3, 5, 2], dim=1)
    # Unit heads scaled by w then jointly normalised: block norms are w / sqrt(sum w^2).
    torch.testing.assert_close(blocks[0].norm(dim=1), torch.full((7,), 2 / 5**0.5))
    torch.testing.assert_close(blocks[1].norm(dim=1), torch.full((7,), 1 / 5**0.5))
    assert torch.count_nonzero(blocks[2]) == 0


def test_keeps_dtype_and_order():
    heads = {"b": torch.randn(4, 2, dtype=torch.float64), "a": torch.randn(4, 3, dtype=torch.float64)}
    out = combine_embeddings(heads)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[:, :2] * 2**0.5, F.normalize(heads["b"], dim=1))


@pytest.mark.parametrize(
    "heads, weights, match",
    [
        ({}, None, "non-empty mapping"),
        (_heads(), {"h0": 1.0, "h1": 1.0}, r"missing \['h2'\]"),
        (_heads(), {"h0": 1.0, "h1": 1.0, "h2": 1.0, "x": 1.0}, r"unknown \['x'\]"),
        (_heads(), {"h0": -1.0, "h1": 1.0, "h2": 1.0}, r"weights\['h0'\]"),
        (_heads(), {"h0": float("nan"), "h1": 1.0, "h2": 1.0}, r"weights\['h0'\]"),
        (_heads(), {"h0": 0.0, "h1": 0.0, "h2": 0.0}, "all zero"),
        ({"a": torch.randn(4, 2), "b": torch.randn(5, 2)}, None, r"heads\['b'\] is \(5, 2\)"),
        ({"a": torch.randn(4, 2), "b": torch.randn(4)}, None, r"heads\['b'\] must be a \[N, D\] float tensor"),
    ],
)
def test_bad_input(heads, weights, match):
    with pytest.raises(ValueError, match=match):
        combine_embeddings(heads, weights)
