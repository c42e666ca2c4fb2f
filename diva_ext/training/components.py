"""The trainer's miners, margin losses and MoCo machinery, built from a TrainConfig.

``config.ops`` picks the implementation: ``fused`` (diva_ext's compiled operators) or
``reference`` (the pure-PyTorch versions in diva_ext.reference), for side-by-side comparison.
"""

import contextlib
from typing import Any, Callable, ContextManager, Dict

import torch
from torch import nn

from diva_ext import losses, miners
from diva_ext.moco import MemoryQueue, MomentumEncoder
from diva_ext.training.config import TrainConfig


def margin_loss(config: TrainConfig, num_classes: int) -> nn.Module:
    """DiVA's margin loss with its own class-specific beta (a fresh one per margin task)."""
    return losses.MarginLoss(num_classes, margin=config.margin, beta_init=config.beta_init)


def miner(task: str, config: TrainConfig, generator: torch.Generator):
    """The task's triplet miner: distance-weighted (discriminative), distance-weighted on
    permuted labels (shared), or within one class (intra)."""
    if task == "discriminative":
        return miners.DistanceWeightedMiner(config.lower_cutoff, config.upper_cutoff, positives="one",
                                            generator=generator, ops=config.ops)
    if task == "shared":
        return miners.SharedMiner(config.lower_cutoff, config.upper_cutoff, generator=generator, ops=config.ops)
    if task == "intra":
        return miners.IntraClassMiner(generator=generator)
    raise ValueError(f"no miner for task {task!r}")


class Contrastive:
    """The self-similarity task: DaNCE between the model's head (queries) and a momentum copy of
    the whole model's head on a second view (keys), against a FIFO queue of past keys.

    ``gather`` maps this process's keys to the global batch's (diva_ext.distributed.all_gather
    under torchrun: every rank enqueues the same keys in rank order, so queues stay identical);
    ``autocast`` is the mixed-precision context of the key encoder's forward pass."""

    def __init__(self, config: TrainConfig, model: nn.Module, device: torch.device, *,
                 gather: Callable[[torch.Tensor], torch.Tensor] = lambda keys: keys,
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext):
        self.encoder = MomentumEncoder(model, momentum=config.momentum)
        self.queue = MemoryQueue.for_batches(config.queue_batches, config.batch_size, config.embed_dim, device=device)
        self.criterion = losses.DaNCELoss(config.temperature, lower_cutoff=config.lower_cutoff,
                                          upper_cutoff=config.dance_upper_cutoff, ops=config.ops)
        self.gather, self.autocast = gather, autocast

    @torch.no_grad()
    def keys(self, key_images: torch.Tensor) -> torch.Tensor:
        """The global batch's keys [B, D] in float32 from this process's key images."""
        with self.autocast():
            keys = self.encoder(key_images)["selfsimilarity"]
        return self.gather(keys.float())

    def enqueue(self, images: torch.Tensor) -> None:
        """The key encoder's keys of ``images`` enter the queue (filling it before training)."""
        self.queue.enqueue(self.keys(images))

    def loss(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """DaNCE of ``queries`` [B, D] against their ``keys`` [B, D] and the queue."""
        return self.criterion(queries, keys, self.queue.negatives())

    def after_step(self, model: nn.Module, keys: torch.Tensor) -> None:
        """EMA update of the key encoder, then the step's ``keys`` enter the queue."""
        self.encoder.update(model)
        self.queue.enqueue(keys)

    def state_dict(self) -> Dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "queue": self.queue.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.queue.load_state_dict(state["queue"])
