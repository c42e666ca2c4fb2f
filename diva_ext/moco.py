"""MoCo machinery (He et al. 2020, as used by DiVA's DaNCE objective): a FIFO memory queue of
key embeddings and a momentum (EMA) copy of the query encoder that produces the keys.

A training step reads the negatives, computes the loss, and enqueues the step's keys:

    keys = key_encoder(images_k)                    # no gradient
    loss = dance(query, keys, queue.negatives())    # DaNCELoss / InfoNCELoss
    loss.backward(); optimizer.step()
    key_encoder.update(model)                       # EMA of the parameters
    queue.enqueue(keys)

The fused loss does not keep the queue for its backward pass when the queue needs no gradient,
so enqueue() may also run before backward(); the explicit reference loss does keep it (enqueue
after backward there, or pass ``queue.negatives().clone()``).
"""

import copy
from typing import Iterable

import torch
from torch import nn

from diva_ext import _validation as _check


class MemoryQueue(nn.Module):
    """A FIFO ring buffer of K key embeddings, updated in place.

    Args:
        size: K, the number of keys held, an integer >= 1 (DiVA: n_key_batches x batch size,
            see for_batches).
        dim: D, the embedding dimension, an integer >= 1.
        dtype, device: of the buffer.

    The buffer starts empty and fills from the first batches enqueued (``fill`` runs a few
    batches through the key encoder before training, as DiVA does); until it holds K keys,
    ``negatives()`` returns only the filled rows. Afterwards each ``enqueue`` overwrites the
    oldest keys. The keys and the write position are part of ``state_dict()``, so a checkpoint
    resumes with the same queue.
    """

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        size, dim = _check.integer(size, "size", minimum=None), _check.integer(dim, "dim", minimum=None)
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryQueue: size and dim must be >= 1, got size={size}, dim={dim}")
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype, device=device))
        self._ptr = 0  # next row to write
        self._count = 0  # rows filled so far (<= size)

    @classmethod
    def for_batches(cls, n_key_batches: int, batch_size: int, dim: int, **kwargs) -> "MemoryQueue":
        """A queue of K = n_key_batches x batch_size keys (DiVA: 30 batches, 70 on SOP); both
        integers >= 1."""
        n_key_batches = _check.integer(n_key_batches, "n_key_batches")
        return cls(n_key_batches * _check.integer(batch_size, "batch_size"), dim, **kwargs)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def is_full(self) -> bool:
        return self._count == self.size

    def __len__(self) -> int:
        return self._count

    def negatives(self) -> torch.Tensor:
        """The keys held: [min(K, enqueued so far), D], a view of the buffer (ring order; the
        order does not matter to InfoNCE)."""
        return self.keys if self.is_full else self.keys[: self._count]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Writes keys [n, D] (detached) over the oldest entries; with n > K only the last K stay."""
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"MemoryQueue.enqueue: keys must have shape [n, {self.keys.shape[1]}], got {tuple(keys.shape)}")
        keys = keys.detach().to(dtype=self.keys.dtype, device=self.keys.device)
        # A NaN or inf key would stay for K / n steps and poison every loss computed against it;
        # checked after the cast, which can overflow a float16 queue.
        _check.check_values(finite=[("MemoryQueue.enqueue: keys", keys)])
        n, size = keys.shape[0], self.size
        if n >= size:
            self.keys.copy_(keys[n - size :])
            self._ptr, self._count = 0, size
            return
        first = min(n, size - self._ptr)
        self.keys[self._ptr : self._ptr + first].copy_(keys[:first])
        self.keys[: n - first].copy_(keys[first:])
        self._ptr = (self._ptr + n) % size
        self._count = min(size, self._count + n)

    @torch.no_grad()
    def fill(self, key_batches: Iterable[torch.Tensor]) -> int:
        """Enqueues batches of keys until the queue is full; returns how many batches it took."""
        used = 0
        for keys in key_batches:
            if self.is_full:
                break
            self.enqueue(keys)
            used += 1
        return used

    def get_extra_state(self):
        return {"ptr": self._ptr, "count": self._count}

    def set_extra_state(self, state):
        self._ptr, self._count = int(state["ptr"]), int(state["count"])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.keys.shape[1]}, filled={self._count}"


_BUFFER_MODES = ("copy", "ema", "keep")


class MomentumEncoder(nn.Module):
    """The key encoder of MoCo: a copy of a model whose parameters follow an exponential moving
    average of the model's, ``theta_k <- m theta_k + (1 - m) theta_q`` (DiVA: m = 0.9).

    Args:
        model: the query encoder; it is deep-copied once, and its later values reach the copy
            only through update().
        momentum: m in [0, 1] (0: the copy follows the model exactly; 1: it never changes).
        buffers: what update() does with buffers (e.g. BatchNorm running statistics):
            "copy" (default) copies the model's, "ema" averages floating buffers like parameters
            (and copies the others, e.g. num_batches_tracked), "keep" leaves the copy's own,
            which its forward passes update in training mode.

    The copy never requires gradients, and forward() runs it under torch.no_grad(). It is a
    submodule, so ``state_dict()`` saves it and ``.to()`` / ``.train()`` / ``.eval()`` apply.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.9, *, buffers: str = "copy"):
        super().__init__()
        momentum = _check.number(momentum, "momentum")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MomentumEncoder: momentum must be in [0, 1], got {momentum}")
        if buffers not in _BUFFER_MODES:
            raise ValueError(f"MomentumEncoder: buffers must be one of {_BUFFER_MODES}, got {buffers!r}")
        self.encoder = copy.deepcopy(model)
        self.encoder.requires_grad_(False)
        self.momentum = float(momentum)
        self.buffers_mode = buffers

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.encoder(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model`` (same architecture as the copy)."""
        mine = dict(self.encoder.named_parameters())
        theirs = dict(model.named_parameters())
        if mine.keys() != theirs.keys():
            raise ValueError("MomentumEncoder.update: the model's parameters do not match the key encoder's")
        names = list(mine)
        targets = [mine[n] for n in names]
        sources = [theirs[n].detach() for n in names]
        if targets:
            # theta_k + (1 - m) (theta_q - theta_k) = m theta_k + (1 - m) theta_q
            torch._foreach_lerp_(targets, sources, 1.0 - self.momentum)
        if self.buffers_mode == "keep":
            return
        my_buffers = dict(self.encoder.named_buffers())
        their_buffers = dict(model.named_buffers())
        if my_buffers.keys() != their_buffers.keys():
            raise ValueError("MomentumEncoder.update: the model's buffers do not match the key encoder's")
        for name, buf in my_buffers.items():
            src = their_buffers[name].detach()
            if self.buffers_mode == "ema" and buf.is_floating_point():
                buf.lerp_(src, 1.0 - self.momentum)
            else:
                buf.copy_(src)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, buffers={self.buffers_mode!r}"
