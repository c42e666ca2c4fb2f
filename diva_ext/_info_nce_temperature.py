"""The temperatures info_nce honours, for the Python paths that check without the compiled op
(its fake kernels, diva_ext.reference, the losses, TrainConfig): the table of
csrc/include/diva_ext/info_nce_checks.h (info_nce_min_temperature_exponent), derived there.

In short, with unit rows the logits reach 1 / T: "none" needs lse - a (up to 2 / T) finite in
q's dtype; "dance" also needs 1 / T < 2^31 in float32 accumulation (2^62 in float64), because
its online pass's offsets c t - m reach half an ulp of the logits and go through exp.
"""

import math
from typing import Optional

import torch


def min_temperature_exponent(dtype: torch.dtype, weighting: str) -> int:
    """e such that info_nce accepts T >= 2^e for q of ``dtype`` with ``weighting``."""
    dance = weighting == "dance"
    if dtype == torch.float64:
        return -61 if dance else -1022
    if dtype == torch.float16:
        return -14
    return -30 if dance else -126  # float32 accumulation: float32, bfloat16


def min_temperature(dtype: torch.dtype, weighting: str) -> float:
    return math.ldexp(1.0, min_temperature_exponent(dtype, weighting))


def temperature_error(op: str, temperature: float, dtype: torch.dtype, weighting: str) -> Optional[str]:
    """The one-line refusal of a temperature below the range (None when it is in range)."""
    e = min_temperature_exponent(dtype, weighting)
    if temperature >= math.ldexp(1.0, e):
        return None
    return (f'{op}: temperature must be >= 2^{e} = {math.ldexp(1.0, e):.6g} for weighting "{weighting}" in '
            f"{dtype} (logits |<q, k>| / T of unit rows must stay in range), got {temperature!r}")
