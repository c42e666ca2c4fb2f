"""Validation of evaluate()'s inputs, and their conversion to a scale-free float32 tensor.

Distances are computed in float32 from squared norms, so raw magnitudes near float32's limits
overflow (|x| ~ 1e19: squares ~ 1e38 -> inf) or underflow (|x| ~ 1e-22: squares subnormal or 0),
which made faiss abort the process in k-means and silently changed recall. Every metric here is
invariant to a common scale factor of the embeddings, so the embeddings are first multiplied by
the power of two that brings their largest magnitude into [0.5, 1): exact (a power of two only
shifts exponents), so any two inputs that differ by a power-of-two factor give bit-identical
float32 tensors and therefore identical metrics.
"""

import numbers
from typing import Optional, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

def embeddings_to_tensor(embeddings: ArrayLike, name: str = "embeddings") -> torch.Tensor:
    """[N, D] float tensor/array -> contiguous float32 tensor on the same device, rescaled.

    Checks (before any cast, so a finite float64 beyond float32's range is not mistaken for inf):
    a torch.Tensor or numpy.ndarray, floating point, 2-D, N >= 2, D >= 1, every entry finite.

    Returns:
        float32 [N, D]: ``embeddings * 2**-e`` with ``e`` the exponent of max |embeddings|
        (``frexp``), so the largest magnitude lies in [0.5, 1); all-zero input stays zero. A
        float32 input already in that range is returned without a copy when contiguous.
    """
    if isinstance(embeddings, torch.Tensor):
        if not embeddings.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {embeddings.dtype}")
        x = embeddings.detach()
    elif isinstance(embeddings, np.ndarray):
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise ValueError(f"{name} must be a floating-point array, got dtype {embeddings.dtype}")
        x = embeddings
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(embeddings).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 rows and 1 column, got shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray):
        # float16/float32 -> float32 is exact; float64 and longdouble are scaled before their cast.
        if x.dtype in (np.float16, np.float32):
            x = x.astype(np.float32, copy=False)
        exponent = _exponent(x.min(), x.max(), name)
        if exponent:
            x = np.ldexp(x, -exponent)  # exact per element, for longdouble and subnormals too
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.dtype != torch.float64:
        x = x.float()
    low, high = torch.aminmax(x)
    exponent = _exponent(low.item(), high.item(), name)
    if exponent:
        for factor in _power_of_two_factors(-exponent):
            x = x * factor
    return x.float().contiguous()


def _exponent(low, high, name: str) -> int:
    """e with max |x| = m * 2**e, m in [0.5, 1), from x's min and max (0 for all-zero x).

    min and max propagate NaN and hold any infinity, so they also decide finiteness without an
    [N, D] temporary. numpy scalars stay in their dtype (a longdouble beyond float64's range).
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    max_abs = max(-low, high)
    return int(np.frexp(max_abs)[1]) if max_abs > 0 else 0


def _power_of_two_factors(exponent: int) -> Tuple[float, ...]:
    """Floats whose product is 2**exponent, each representable in the dtype being scaled, so that
    multiplying by them in turn is exact where 2**exponent alone would overflow (scaling subnormal
    float64 data up by 2**1030, or subnormal float32 data up by 2**140)."""
    half = exponent // 2
    return tuple(f for f in (2.0**half, 2.0 ** (exponent - half)) if f != 1.0)


def labels_to_tensor(labels: ArrayLike, n: int, name: str = "labels") -> torch.Tensor:
    """[N] integer tensor/array/sequence -> int64 CPU tensor of length n."""
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
        array = labels.detach().cpu()
    else:
        try:
            numpy_labels = np.asarray(labels)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor, array or sequence of integer class ids ({err})") from None
        if numpy_labels.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer class ids, got dtype {numpy_labels.dtype}")
        if numpy_labels.dtype == np.uint64 and numpy_labels.size and numpy_labels.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} has class ids beyond int64")
        array = torch.from_numpy(numpy_labels.astype(np.int64))
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape [N], got shape {tuple(array.shape)}")
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries but embeddings has {n} rows")
    return array.to(torch.int64).contiguous()


def positive_ints(values, name: str) -> Tuple[int, ...]:
    """A non-empty collection of ints >= 1, sorted and deduplicated."""
    try:
        items = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {values!r}") from None
    if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in items):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return tuple(sorted({int(v) for v in items}))


def check_flag(value, name: str, optional: bool = False) -> Optional[bool]:
    """A bool (numpy's too), or None where ``optional``; anything else is a TypeError."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    allowed = "True, False or None" if optional else "True or False"
    raise TypeError(f"{name} must be {allowed}, got {value!r}")


def check_int(value, name: str, low: int, high: Optional[int] = None, optional: bool = False) -> Optional[int]:
    """An int in [low, high) (high None: no upper bound), or None where ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
