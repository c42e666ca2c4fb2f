"""Atomic checkpoint and JSON writes: a crash mid-write never leaves a truncated file behind."""

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    _atomic_replace(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: Path) -> None:
    _atomic_replace(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file raises several types
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err


def rng_states() -> Dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
