"""Validation and conversion of evaluate()'s inputs to the float32/int64 numpy arrays faiss wants."""

from typing import Tuple, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]


def embeddings_to_numpy(embeddings: ArrayLike, name: str = "embeddings") -> Tuple[np.ndarray, bool]:
    """[N, D] float tensor/array -> (C-contiguous float32 array, whether it lived on a CUDA device)."""
    on_cuda = isinstance(embeddings, torch.Tensor) and embeddings.is_cuda
    if isinstance(embeddings, torch.Tensor):
        if not embeddings.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {embeddings.dtype}")
        array = embeddings.detach().to("cpu", torch.float32).numpy()
    elif isinstance(embeddings, np.ndarray):
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise ValueError(f"{name} must be a floating-point array, got dtype {embeddings.dtype}")
        array = embeddings.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(embeddings).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(array.shape)}")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 rows and 1 column, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(array), on_cuda


def labels_to_numpy(labels: ArrayLike, n: int, name: str = "labels") -> np.ndarray:
    """[N] integer tensor/array/sequence -> int64 array of length n."""
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
        array = labels.detach().cpu().numpy()
    else:
        array = np.asarray(labels)
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer class ids, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape [N], got shape {tuple(array.shape)}")
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries but embeddings has {n} rows")
    return array.astype(np.int64, copy=False)


def positive_ints(values, name: str) -> Tuple[int, ...]:
    """A non-empty collection of ints >= 1, sorted and deduplicated."""
    try:
        items = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {values!r}") from None
    if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in items):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return tuple(sorted({int(v) for v in items}))
