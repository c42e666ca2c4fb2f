"""A pretrained start for the small backbone, as the paper starts from ImageNet: plain
classification (cross-entropy, one linear classifier) on synthetic classes disjoint from both
the train and the test classes of the run (the generator has 576 factor combinations; a run uses
``num_classes`` for train and as many for test, pretraining gets the rest, see
diva_ext.data.synthetic's ``pretrain`` split).

The weights are cached under a key of every setting that changes them (the data's seed and
split sizes, image size, backbone width, the optimisation), as a checkpoint file in the project's
format (atomic, hashed, read with ``weights_only=True``): ``<cache>/<key>.pt`` with ``<cache>``
= ``$DIVA_CACHE_DIR/pretrained`` or ``~/.cache/diva_ext/pretrained``. The next run with the same
settings reuses it; a cache file that fails verification or holds other settings is moved aside
(``<key>.pt.corrupt``, never deleted) and rebuilt.
"""

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from diva_ext.data.sampler import ClassBalancedBatchSampler
from diva_ext.data.synthetic import GENERATOR_VERSION, SyntheticDataset, generate, pretrain_class_count
from diva_ext.data.transforms import make_transforms
from diva_ext.models.backbones import SmallCNN
from diva_ext.training import checkpoint as ckpt

# Bump when the pretraining procedure changes what it produces for the same settings.
FORMAT = 1
KIND = "diva_ext pretrained backbone"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything the pretrained weights depend on (the cache key is their hash)."""

    data_seed: int = 0          # the synthetic data's seed (chooses every split's classes)
    split_classes: int = 100    # num_classes of the run's train and test splits (excluded here)
    train_part: str = "varies"  # the synthetic data's class design (its train_part option)
    generator: int = GENERATOR_VERSION  # the synthetic renderer's version: other images, other weights
    image_size: int = 32        # the synthetic images' side (and the backbone's input)
    images_per_class: int = 12
    width: int = 32             # SmallCNN's width
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0               # initialisation, sampling and augmentation

    def validate(self) -> "PretrainConfig":
        for name in ("split_classes", "image_size", "images_per_class", "width", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pretrain {name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("data_seed", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"pretrain {name.replace('_', '-')} must be an integer >= 0, got {value!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"pretrain {name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        if self.generator != GENERATOR_VERSION:
            raise ValueError(f"pretrain generator must be the synthetic renderer's version {GENERATOR_VERSION}, "
                             f"got {self.generator!r}")
        pretrain_class_count(self.split_classes, self.train_part)  # raises when train and test leave none
        return self

    def key(self) -> str:
        """The cache key: SHA-256 (first 24 hex digits) of the settings and FORMAT."""
        text = json.dumps({"format": FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    root = os.environ.get("DIVA_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "diva_ext") / "pretrained"


def pretrain_set(config: PretrainConfig, transform=None) -> SyntheticDataset:
    images, labels, classes = generate(config.split_classes, config.images_per_class, config.image_size,
                                       "pretrain", config.data_seed, config.train_part)
    return SyntheticDataset(images, labels, classes, "pretrain", config.data_seed, transform)


def pretrain(config: PretrainConfig, *, progress: bool = False) -> Dict[str, Any]:
    """Train SmallCNN + a linear classifier by cross-entropy; returns ``{"backbone": state dict,
    "metrics": {...}}``. Torch's global random state is left as it was."""
    config.validate()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        train_tf, _ = make_transforms("small", config.image_size)
        dataset = pretrain_set(config, train_tf)
        backbone = SmallCNN(config.width)
        classifier = nn.Linear(backbone.out_dim, dataset.num_classes)
        model = nn.Sequential(backbone, classifier)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # Class-balanced batches, as the metric-learning runs draw them (many classes per batch).
        sampler = ClassBalancedBatchSampler(dataset.labels, config.batch_size, 4, generator=config.seed)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * len(sampler))
        start, history = time.time(), []
        model.train()
        for epoch in range(config.epochs):
            total, correct, seen = 0.0, 0, 0
            for images, labels, _ in tqdm(loader, desc=f"pretrain {epoch + 1}/{config.epochs}", leave=False,
                                          disable=not progress):
                logits = model(images)
                loss = nn.functional.cross_entropy(logits, labels)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"pretraining diverged (loss {float(loss)}); try a lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * labels.shape[0]
                correct += int((logits.argmax(1) == labels).sum())
                seen += labels.shape[0]
            history.append({"epoch": epoch + 1, "loss": total / seen, "train_accuracy": correct / seen})
    metrics = {"classes": dataset.num_classes, "images": len(dataset), "epochs": history,
               "seconds": round(time.time() - start, 2)}
    return {"backbone": backbone.state_dict(), "metrics": metrics}


def _read_cache(path: Path, config: PretrainConfig) -> Optional[Dict[str, Any]]:
    """The cached entry at ``path`` if it verifies and was made with ``config``; None if absent.
    A file that fails either check is moved aside (so nothing is lost) and None returned."""
    if not path.exists():
        return None
    try:
        state = ckpt.load_checkpoint(path)
        ckpt.require_parts(state, path, {"kind": str, "settings": dict, "backbone": dict})
        if state["kind"] != KIND or state["settings"] != dataclasses.asdict(config):
            raise ValueError(f"{path} holds other pretraining settings")
        return state
    except (ValueError, OSError, KeyError, TypeError) as err:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        warnings.warn(f"pretrained cache {path} refused ({ckpt.one_line(err)}); moved to {aside}, rebuilding",
                      stacklevel=3)
        return None


def cached_pretrain(config: PretrainConfig, cache_dir: Optional[Path] = None, *, progress: bool = False,
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The pretrained entry for ``config`` (``kind``, ``settings``, ``backbone``, ``metrics``,
    ``path``): from the cache when there, else trained and cached."""
    config.validate()
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{config.key()}.pt"
    state = _read_cache(path, config)
    if state is None:
        log(f"pretraining the small backbone on {pretrain_class_count(config.split_classes, config.train_part)} "
            f"synthetic classes "
            f"disjoint from train and test (cached as {path})")
        result = pretrain(config, progress=progress)
        state = {"kind": KIND, "settings": dataclasses.asdict(config), **result}
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt.save_checkpoint(state, path)
    else:
        log(f"pretrained backbone from the cache: {path}")
    return {**state, "path": str(path)}


def settings_for(config, dataset_options: Dict[str, Any]) -> PretrainConfig:
    """The pretraining that a TrainConfig (``pretrained synthetic``) starts from: synthetic classes
    disjoint from its own data's train and test classes (same seed and split size) at its input
    size. For other datasets the synthetic defaults (seed: the run's) stand in."""
    import inspect

    from diva_ext.data.synthetic import load_synthetic
    from diva_ext.data.transforms import output_size

    defaults = {k: p.default for k, p in inspect.signature(load_synthetic).parameters.items()
                if p.default is not inspect.Parameter.empty}
    options = dict(dataset_options) if config.dataset == "synthetic" else {}
    return PretrainConfig(data_seed=int(options.get("seed", config.seed)),
                          split_classes=int(options.get("num_classes", defaults["num_classes"])),
                          train_part=str(options.get("train_part", defaults["train_part"])),
                          image_size=output_size(config.transform, config.image_size), seed=config.seed).validate()
