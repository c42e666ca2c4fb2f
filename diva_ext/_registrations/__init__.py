"""Fake (meta) kernels and autograd formulas of the compiled operators, one module per op.

Imported by diva_ext/__init__.py after the compiled library is loaded.
"""

from diva_ext._registrations import pairwise_distance  # noqa: F401
from diva_ext._registrations import distance_weighted  # noqa: F401
from diva_ext._registrations import info_nce  # noqa: F401
from diva_ext._registrations import supervised_info_nce  # noqa: F401
