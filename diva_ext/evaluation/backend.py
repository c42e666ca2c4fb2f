"""Which implementation evaluate() runs: faiss (optional) or the exact, chunked torch backend.

faiss is imported when needed, never at module import, so diva_ext.evaluation works without it
(and a test can hide it with ``sys.modules["faiss"] = None``).
"""

import importlib
from typing import Optional, Tuple

import torch

BACKENDS = ("auto", "torch", "faiss")


def import_faiss():
    """The faiss module; ImportError (with faiss's own reason) when it cannot be imported."""
    return importlib.import_module("faiss")


def faiss_available() -> bool:
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def faiss_gpu_available() -> bool:
    """True when faiss imports and its build sees at least one GPU."""
    try:
        faiss = import_faiss()
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_backend(backend: str, device: torch.device, use_gpu: Optional[bool]) -> Tuple[str, bool]:
    """(``"torch"`` or ``"faiss"``, whether faiss uses its GPU index) for evaluate()'s arguments.

    ``"auto"``: faiss when it imports, except when the embeddings are on a CUDA device that faiss
    cannot use (a CPU-only faiss build) and ``use_gpu`` is unset: then torch, on that GPU, beats
    copying to faiss on the CPU. Without faiss, ``"auto"`` is torch.
    ``use_gpu`` is a faiss option (None: faiss's GPU index when it sees a GPU and the embeddings
    are on CUDA); the torch backend always runs on the embeddings' device.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "torch":
        if use_gpu is not None:
            raise ValueError(
                f"use_gpu={use_gpu} is a faiss option; backend='torch' runs on the embeddings' device ({device}). "
                "Move the embeddings, or leave use_gpu unset"
            )
        return "torch", False
    try:
        import_faiss()
    except ImportError as err:
        if backend == "auto" and not use_gpu:
            return "torch", False
        asked = "backend='faiss'" if backend == "faiss" else "use_gpu=True"
        raise ValueError(f"{asked} needs faiss, which cannot be imported ({err}); "
                         "install faiss-gpu, or use backend='torch'") from err
    on_cuda = device.type == "cuda"
    if use_gpu is None:
        if backend == "auto" and on_cuda and not faiss_gpu_available():
            return "torch", False
        return "faiss", on_cuda and faiss_gpu_available()
    if use_gpu and not faiss_gpu_available():
        raise ValueError("use_gpu=True but this faiss build sees no GPU")
    return "faiss", use_gpu
