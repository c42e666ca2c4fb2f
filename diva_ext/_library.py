"""Loads the compiled operator library, failing loudly when it is missing."""

import importlib

BUILD_HINT = (
    "diva_ext's compiled operators (diva_ext/_C) are missing or failed to load. In a checkout of "
    "the repository, build them with `make setup` (or `python setup.py build_ext --inplace`; "
    "DIVA_FORCE_CPU=1 for a CPU-only build); rebuild an installed diva_ext against the torch of "
    "this environment with `pip install --no-build-isolation --force-reinstall --no-deps <checkout>`. "
    "diva_ext never falls back to pure PyTorch silently; use diva_ext.reference explicitly for that."
)


def load_library():
    import torch  # libtorch must be loaded before _C

    try:
        importlib.import_module("diva_ext._C")
    except ImportError as err:
        # An unresolved libtorch symbol: the usual sign of a build made for another torch release.
        other_torch = (f"\nIt was most likely compiled against another torch than this one ({torch.__version__}): "
                       "a build loads only under the torch release it was compiled against."
                       if "undefined symbol" in str(err) else "")
        raise ImportError(f"{BUILD_HINT}{other_torch}\nCause: {err}") from err
