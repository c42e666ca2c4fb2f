"""The device a run asks for, checked against this machine before anything is moved there."""

import torch

from diva_ext.training.config import DEVICE_PATTERN


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)`` for ``cpu``, ``cuda`` or ``cuda:INDEX``; ValueError naming the
    device if it is another kind, or this machine has no such GPU."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device must be cpu, cuda or cuda:INDEX, got {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {name!r}: {built}; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                             f"(cuda:0 to cuda:{count - 1})")
    return device
