"""One process of test_distributed's tiny runs: a rank of a gloo job, or the single-process
reference. Records the per-step losses, the first step's gradients and the discriminative
miner's first input and triplets to ``OUT/record{rank}.pt``; files the trainer writes go to
``OUT/rank{rank}`` (so the test can see that only rank 0 writes)."""

import os
from pathlib import Path

import torch

from diva_ext import distributed
from diva_ext.data.transforms import TwoViews, make_transforms
from diva_ext.training.config import TrainConfig
from diva_ext.training.trainer import DiVATrainer


def run(rank: int, world_size: int, port: int, config_values: dict, dataset_options: dict, out: str,
        forward_parts: int = 1) -> None:
    """``forward_parts`` > 1 (one process): the model and the momentum encoder run on that many
    equal slices of each batch, as that many ranks run on their shares of the global batch."""
    torch.set_num_threads(1)  # several processes share the cores: one thread each, no oversubscription
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        distributed.init_from_env("cpu", timeout_s=60)
    try:
        _train(rank, config_values, dataset_options, Path(out), forward_parts)
    finally:
        distributed.shutdown()


def _concatenated(outputs):
    """Per-slice outputs (tensors, tuples, dicts of them) joined along the batch."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, dict):
        return {key: _concatenated([o[key] for o in outputs]) for key in first}
    return type(first)(_concatenated(list(parts)) for parts in zip(*outputs))


def _forward_in_parts(module: torch.nn.Module, parts: int) -> None:
    forward = module.forward

    def sliced(x, *args, **kwargs):
        return _concatenated([forward(chunk, *args, **kwargs) for chunk in x.chunk(parts)])

    module.forward = sliced


def _train(rank, config_values, dataset_options, out, forward_parts=1):
    config = TrainConfig.from_dict(config_values)
    trainer = DiVATrainer(config, out / f"rank{rank}", progress=False, log=lambda line: None,
                          dataset_options=dataset_options)
    if forward_parts > 1:
        _forward_in_parts(trainer.model, forward_parts)
        if trainer.contrastive is not None:
            _forward_in_parts(trainer.contrastive.encoder, forward_parts)
    # Augmentation draws differ between a 1- and a 2-process run by design (each rank draws its
    # own); the deterministic test transform (keys: its mirror image) makes the runs comparable image for image.
    _, plain = make_transforms(config.transform, config.image_size)
    # (On the images' dataset: with validation classes held out, train_set is a ClassSubset of it.)
    images = getattr(trainer.train_set, "dataset", trainer.train_set)
    images.transform = TwoViews(plain, lambda image: plain(image).flip(-1))

    record = {"losses": [], "grads": None, "mined": None, "local": None}
    step = trainer.training_step

    def recording_step(images, labels):
        result = step(images, labels)
        record["losses"].append(result)
        return result

    trainer.training_step = recording_step

    def record_gradients(optimizer, args, kwargs):
        if record["grads"] is None:
            named = list(trainer.model.named_parameters()) + [
                (f"criteria.{n}", p) for n, p in trainer.criteria.named_parameters()]
            if trainer.adversarial is not None:
                named += [(f"adversarial.{n}", p) for n, p in trainer.adversarial.named_parameters()]
            record["grads"] = {n: p.grad.clone() for n, p in named if p.grad is not None}

    trainer.optimizer.register_step_pre_hook(record_gradients)

    def record_local(module, inputs, output):
        heads = output[1] if isinstance(output, tuple) else output  # (features, heads) in training
        if record["local"] is None:
            record["local"] = heads["discriminative"].detach().clone()

    trainer.model.register_forward_hook(record_local)
    miner = trainer.miners["discriminative"]

    def recording_miner(embeddings, labels, *rest):
        triplets = miner(embeddings, labels, *rest)
        if record["mined"] is None:
            record["mined"] = {"embeddings": embeddings.detach().clone(), "labels": labels.clone(),
                               "triplets": [t.clone() for t in triplets]}
        return triplets

    trainer.miners["discriminative"] = recording_miner
    record["metrics"] = trainer.fit()
    torch.save(record, out / f"record{rank}.pt")
