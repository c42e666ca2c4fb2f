"""Loads the compiled operator library, failing loudly when it is missing."""

import importlib

BUILD_HINT = (
    "diva_ext's compiled operators (diva_ext/_C) are missing or failed to load. Build them from "
    "the repository root with `make setup` (or `python setup.py build_ext --inplace`; "
    "DIVA_FORCE_CPU=1 for a CPU-only build). diva_ext never falls back to pure PyTorch silently; "
    "use diva_ext.reference explicitly for that."
)


def load_library():
    import torch  # noqa: F401  (libtorch must be loaded before _C)

    try:
        importlib.import_module("diva_ext._C")
    except ImportError as err:
        raise ImportError(f"{BUILD_HINT}\nCause: {err}") from err
