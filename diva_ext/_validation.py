"""Argument checks shared by the losses, the miners and the MoCo queue.

One rule, one message: each check names the argument it rejects ("labels must have one entry
per row of embeddings (12), got 11"). Python values of the wrong type (a float or a bool where an
integer is meant, a string where a number is) are a TypeError, never truncated or coerced; numbers
out of range and tensors of the wrong shape, dtype or values are a ValueError.

The value checks (finite entries, indices in range) read the tensors; ``check_values`` gathers
all of a call's into one device-to-host copy, so a CUDA call synchronises once.
"""

import math
import numbers
from typing import Iterable, Optional, Tuple

import torch


# ---- Python numbers --------------------------------------------------------------------------

def integer(value, name: str, *, minimum: Optional[int] = 1) -> int:
    """``value`` as an int: an integral number (not a bool), at least ``minimum`` unless None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def number(value, name: str) -> float:
    """``value`` as a float: a real number, not a bool (NaN and inf pass; callers bound it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def real(value, name: str, *, minimum: Optional[float] = None, strict: bool = False,
         maximum: Optional[float] = None) -> float:
    """``value`` as a finite float, ``> minimum`` (``strict``) or ``>= minimum``, ``<= maximum``."""
    value = number(value, name)
    ok = math.isfinite(value)
    ok = ok and (minimum is None or (value > minimum if strict else value >= minimum))
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bounds = [f"{'>' if strict else '>='} {minimum:g}"] if minimum is not None else []
        bounds += [f"<= {maximum:g}"] if maximum is not None else []
        raise ValueError(f"{name} must be {' and '.join(bounds + ['finite'])}, got {value}")
    return value


def cutoffs(lower_cutoff, upper_cutoff) -> Tuple[float, float]:
    """The distance-weighting cutoffs: 0 < lower_cutoff <= upper_cutoff, lower finite (the weight
    diverges at distance 0), upper inf for no cutoff. The rule of the info_nce operator."""
    lower, upper = number(lower_cutoff, "lower_cutoff"), number(upper_cutoff, "upper_cutoff")
    if not (math.isfinite(lower) and lower > 0):
        raise ValueError(f"lower_cutoff must be finite and > 0 (the weight diverges at distance 0), got {lower}")
    if not upper >= lower:  # NaN fails too
        raise ValueError(f"upper_cutoff must be > 0 with lower_cutoff <= upper_cutoff (inf for no cutoff), "
                         f"got lower_cutoff={lower}, upper_cutoff={upper}")
    return lower, upper


def generator(value, name: str = "generator") -> Optional[torch.Generator]:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


# ---- tensors: shapes and dtypes --------------------------------------------------------------

def is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} of shape {list(t.shape)}"
    return type(t).__name__


def matrix(t, name: str, *, like: Optional[torch.Tensor] = None, like_name: str = "",
           rows: Optional[int] = None, same_dtype: bool = False) -> torch.Tensor:
    """A 2-D floating tensor [N, D]; with ``like``, on its device with its D columns (and its
    dtype with ``same_dtype``); with ``rows``, exactly that many rows (those of ``like``)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a 2-D tensor [N, D] of a floating dtype, got {_describe(t)}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{name} must match {like_name}'s device ({like.device}), got {t.device}")
        if t.shape[1] != like.shape[1]:
            raise ValueError(f"{name} must match {like_name}'s {like.shape[1]} columns, got shape {list(t.shape)}")
        if rows is not None and t.shape[0] != rows:
            raise ValueError(f"{name} must match {like_name}'s {rows} rows, got shape {list(t.shape)}")
        if same_dtype and t.dtype != like.dtype:
            raise ValueError(f"{name} must match {like_name}'s dtype ({like.dtype}), got {t.dtype}")
    return t


def label_vector(t, name: str, rows: int, rows_name: str) -> torch.Tensor:
    """A 1-D integer tensor with one entry per row of ``rows_name`` (``rows`` of them)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or not is_integer_dtype(t.dtype):
        raise ValueError(f"{name} must be a 1-D integer tensor [N], got {_describe(t)}")
    if t.shape[0] != rows:
        raise ValueError(f"{name} must have one entry per row of {rows_name} ({rows}), got {t.shape[0]}")
    return t


def index_vector(t, name: str, device) -> torch.Tensor:
    """A 1-D integer tensor (or sequence of ints) as int64 on ``device``."""
    t = torch.as_tensor(t, device=device)
    if t.dim() != 1 or not is_integer_dtype(t.dtype):
        raise ValueError(f"{name} must be a 1-D integer tensor, got {_describe(t)}")
    return t.long()


# ---- tensors: values -------------------------------------------------------------------------

def check_values(*, finite: Iterable[Tuple[str, torch.Tensor]] = (),
                 ranges: Iterable[Tuple[str, torch.Tensor, int, str]] = ()) -> None:
    """Raises if a tensor of ``finite`` holds NaN or inf, or if an entry (name, values, high,
    high_text) of ``ranges`` has values outside [0, high), checked in order. One device-to-host
    copy for all of them (a single synchronisation on CUDA)."""
    checks, parts = [], []
    for name, t in finite:
        if t.numel():
            # aminmax propagates NaN and shows inf as an extreme: no [N, D] mask.
            parts += list(torch.aminmax(t.detach()))
            checks.append((name, None, None))
    for name, t, high, high_text in ranges:
        if t.numel():
            parts += list(torch.aminmax(t))
            checks.append((name, high, high_text))
    if not parts:
        return
    values = torch.stack([p.to(device=parts[0].device, dtype=torch.float64) for p in parts]).tolist()
    for (name, high, high_text), lo, hi in zip(checks, values[0::2], values[1::2]):
        if high is None:
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        elif lo < 0 or hi >= high:
            raise ValueError(f"{name} must lie in [0, {high_text}), got values in [{int(lo)}, {int(hi)}]")
