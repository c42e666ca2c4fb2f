"""diva_ext: fused C++/CUDA operators for deep metric learning, and a DiVA reproduction.

Importing the package loads the compiled operators (torch.ops.diva_ext.*) and registers their
fake kernels and autograd formulas. There is no silent fallback to pure PyTorch: without the
compiled library the import fails and says how to build it.
"""

from diva_ext._library import load_library as _load_library

_load_library()

from diva_ext import _registrations  # noqa: E402,F401  (fake kernels + autograd)
from diva_ext import ops, reference  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ops", "reference", "cuda_built"]


def cuda_built() -> bool:
    """True when the compiled library contains the CUDA kernels (whether or not a GPU exists)."""
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key("diva_ext::pairwise_distance", "CUDA")
