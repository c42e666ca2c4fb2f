"""Checkpoint files: atomic to write, verified before they are read, and never code.

A checkpoint is one file: a magic line, a JSON header line holding the SHA-256 and the length of
the payload, then the payload, a ``torch.save`` of a dict of tensors and plain Python values::

    diva-checkpoint 1\\n
    {"payload_bytes": N, "sha256": "..."}\\n
    <N bytes of torch.save output>

Reading checks the hash over the payload's bytes before anything is unpickled, then unpickles
those same bytes (no second read of the file to race with) with ``weights_only=True``.

What protects against what:

- ``weights_only=True`` protects against code execution: the unpickler builds tensors and plain
  containers only, so a crafted file (a ``__reduce__`` that runs a command) is an error, never run.
- The hash protects against corruption (flipped bits, a truncated copy, a file edited by mistake):
  such a file is refused, naming it. It lives in the same file, so it does not protect against a
  forger: whoever can edit the file can recompute the hash. Trust a checkpoint's *values* only as
  far as you trust where it came from.

Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the target
(``os.replace``), so a crash or a full disk mid-write leaves the previous file intact.
"""

import errno
import hashlib
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping

import numpy as np
import torch

MAGIC = b"diva-checkpoint 1\n"
# Longest header line read: a hash and a length fit many times over.
_MAX_HEADER = 4096
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFullError(OSError):
    """No space (or quota) left while writing; the file that was there before is unchanged."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file beside it, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            kept = f"the previous {path.name} is unchanged" if path.exists() else f"{path.name} was not written"
            raise DiskFullError(f"disk full: no space left on the device to write {path} "
                                f"({len(data)} bytes); {kept}") from err
        raise
    _fsync_folder(path.parent)


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` (tensors and plain Python values only) as a hashed checkpoint, atomically."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    header = json.dumps({"payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
                        sort_keys=True).encode() + b"\n"
    write_bytes_atomic(path, MAGIC + header + payload)


def write_json_atomic(obj: Any, path: Path) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _verified_payload(path: Path, data: bytes) -> bytes:
    if not data.startswith(MAGIC):
        what = "a plain torch.save file" if data.startswith(b"PK\x03\x04") else "not a diva checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {what} (no 'diva-checkpoint' header); diva only "
                         "loads checkpoints it wrote, whose content hash it can check")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    try:
        header = json.loads(data[len(MAGIC):end]) if end >= 0 else None
        expected_bytes, expected_hash = int(header["payload_bytes"]), str(header["sha256"])
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"cannot read checkpoint {path}: its header is damaged") from None
    payload = data[end + 1:]
    if len(payload) != expected_bytes:
        raise ValueError(f"cannot read checkpoint {path}: {len(payload)} payload bytes where its header "
                         f"says {expected_bytes} (truncated or appended to)")
    if hashlib.sha256(payload).hexdigest() != expected_hash:
        raise ValueError(f"refusing checkpoint {path}: its content hash does not match (the file changed "
                         "after diva wrote it: corrupted or edited)")
    return payload


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """The state dict saved at ``path``, after checking its hash; ValueError naming the file if it
    is not a diva checkpoint, was changed since it was written, or holds anything but data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = _verified_payload(path, path.read_bytes())
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler and torch's zip reader raise several types
        raise ValueError(f"cannot read checkpoint {path}: {one_line(err)}") from err
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a diva state dict")
    return state


def one_line(err: BaseException, limit: int = 300) -> str:
    """``err``'s message on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def require_parts(state: Mapping[str, Any], path: Path, parts: Mapping[str, type]) -> None:
    """ValueError naming ``path`` unless ``state[name]`` exists with the given type for every part."""
    missing = [name for name in parts if name not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: not a diva checkpoint of this kind")
    wrong = [f"{name} is a {type(state[name]).__name__}, expected {kind.__name__}"
             for name, kind in parts.items() if not isinstance(state[name], kind)]
    if wrong:
        raise ValueError(f"checkpoint {path} has the wrong structure: {'; '.join(wrong)}")


def load_part(load: Callable[[Any], Any], state: Any, what: str, path: Path) -> None:
    """``load(state)`` (e.g. a module's ``load_state_dict``); a mismatch (other shapes, missing
    keys, wrong types) is a ValueError naming the part and the file."""
    try:
        load(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"checkpoint {path}: its {what} does not fit: {one_line(err)}") from err


def rng_states() -> Dict[str, Any]:
    """Every random generator's state, as tensors and plain values (numpy's key as a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
