"""Training configuration: one flat dataclass, filled from a named preset and then overridden
field by field (every hyperparameter is a `diva train` flag)."""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from diva_ext._info_nce_temperature import min_temperature
from diva_ext.evaluation.backend import BACKENDS as EVAL_BACKENDS
from diva_ext.models import TASKS

AMP_MODES = ("off", "bf16", "fp16")
# Where the backbone starts without --weights: random weights, or the cached synthetic pretraining.
PRETRAINED = ("none", "synthetic")
# What --device accepts; whether that device exists is checked where it is used (training.devices).
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")
# Seeds: non-negative (numpy's seeding) and small enough that seed * 1_000_003 + rank (per-rank
# augmentation, trainer) stays inside torch.manual_seed's 64 bits.
MAX_SEED = 2**32 - 1
FLOAT32_MAX = 3.4028234663852886e38
# The DaNCE loss runs diva_ext.ops.info_nce in float32: its smallest temperature, 2^-30 (derived in
# csrc/include/diva_ext/info_nce_checks.h; below it the op refuses the call mid-run).
MIN_TEMPERATURE = min_temperature(torch.float32, "dance")
# Adam's first step size is lr / (1 - beta1) = 10 lr (torch's default beta1 = 0.9), a float32.
MAX_LEARNING_RATE = FLOAT32_MAX * (1 - 0.9)
# Distances between unit vectors are at most 2: a lower cutoff at or above it clamps every distance.
MAX_LOWER_CUTOFF = 2.0
# Head weights scale unit embeddings in the float32 test embedding.
MAX_HEAD_WEIGHT = FLOAT32_MAX


@dataclass
class TrainConfig:
    # Data
    dataset: str = "synthetic"
    data_root: Optional[str] = None
    transform: str = "small"          # "small" (CPU-sized images) or "resnet" (224 px)
    image_size: Optional[int] = None  # None: the transform's default
    workers: int = 0
    val_fraction: float = 0.0         # training classes held out as validation classes (best epoch, sweeps)
    # Model
    backbone: str = "small"
    weights: Optional[str] = None     # a local state dict file for the backbone (resnet50: torchvision's)
    pretrained: str = "none"          # without weights: "none" (random) or "synthetic" (diva pretrain, cached)
    frozen_bn: Optional[bool] = None  # BN statistics frozen (eval mode); None: for resnet50 only
    embed_dim: int = 128
    tasks: Tuple[str, ...] = TASKS
    # Optimisation (Adam with parameter groups, MultiStepLR)
    epochs: int = 12
    batch_size: int = 112             # the global batch: split evenly over distributed processes
    samples_per_class: int = 2
    batches_per_epoch: Optional[int] = None  # None: dataset size / batch size
    lr: float = 1e-3
    weight_decay: float = 4e-4
    beta_lr: float = 5e-4
    decorrelation_lr: float = 1e-3
    milestones: Tuple[int, ...] = (8,)
    gamma: float = 0.3
    # Margin losses (one per margin task, each with its own class-specific beta)
    margin: float = 0.2
    beta_init: float = 1.2
    lower_cutoff: float = 0.5
    upper_cutoff: float = math.inf    # the miners': none, as in DiVA's reference code (its cutoff is commented out)
    dance_upper_cutoff: float = 1.4   # DaNCE's distance weights are 0 beyond it
    # Task weights and DiVA's auxiliary machinery
    weight_selfsimilarity: float = 0.3
    weight_shared: float = 0.3
    weight_intra: float = 0.3
    rho: float = 1500.0               # adversarial decorrelation weight (each pair)
    temperature: float = 0.01
    momentum: float = 0.9
    queue_batches: int = 30
    # Test embedding: per-head weight of the concatenation (heads not listed weigh 1)
    head_weights: Dict[str, float] = field(default_factory=dict)
    # Run
    seed: int = 0
    device: str = "cpu"
    ops: str = "fused"                # "fused" (diva_ext ops) or "reference" (pure PyTorch)
    amp: str = "off"                  # mixed precision on CUDA: "off", "bf16" or "fp16"
    eval_every: int = 1
    eval_backend: str = "auto"        # evaluation kNN/k-means: "auto" (faiss if importable), "torch", "faiss"
    recall_at: Tuple[int, ...] = (1, 2, 4, 8)
    preset: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        values = dict(values)
        for key in ("tasks", "milestones", "recall_at"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first setting that makes no sense: every number must be of
        its type, finite (``upper_cutoff`` may be inf: no cutoff) and in its range."""
        def flag(name):
            return name.replace("_", "-")

        def integer(name, low=1, high=None, value=None):
            v = getattr(self, name) if value is None else value
            if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
                what = {1: "a positive integer", 0: "an integer >= 0"}.get(low, f"an integer >= {low}")
                if high is not None:
                    what = f"an integer in [{low}, {high}]"
                raise ValueError(f"{flag(name)} must be {what}, got {v!r}")

        def number(name, low=0.0, strict=True, allow_inf=False, value=None):
            v = getattr(self, name) if value is None else value
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
            ok = ok and (allow_inf or math.isfinite(v)) and (v > low if strict else v >= low)
            if not ok:
                bound = f"> {low:g}" if strict else f">= {low:g}"
                raise ValueError(f"{flag(name)} must be a finite number {bound}, got {v!r}")

        for name in ("epochs", "batch_size", "samples_per_class", "embed_dim", "queue_batches", "eval_every"):
            integer(name)
        integer("workers", low=0)
        integer("seed", low=0, high=MAX_SEED)
        for name in ("batches_per_epoch", "image_size"):
            if getattr(self, name) is not None:
                integer(name)
        for name in ("lr", "beta_lr", "decorrelation_lr", "temperature", "gamma"):
            number(name)
        for name in ("weight_selfsimilarity", "weight_shared", "weight_intra", "rho", "weight_decay", "margin",
                     "beta_init"):
            number(name, strict=False)
        number("momentum", strict=False)
        if not self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.temperature >= MIN_TEMPERATURE:
            raise ValueError(f"temperature must be >= 2^-30 = {MIN_TEMPERATURE:.6g} (DaNCE's logits reach "
                             f"1/temperature in float32), got {self.temperature!r}")
        # The largest rate a group reaches: gamma > 1 raises it at every milestone.
        growth = max(1.0, self.gamma) ** len(self.milestones)
        for name in ("lr", "beta_lr", "decorrelation_lr"):
            if getattr(self, name) * growth > MAX_LEARNING_RATE:
                after = f" (after the milestones' gamma: {getattr(self, name) * growth:.3g})" if growth > 1 else ""
                raise ValueError(f"{flag(name)} must be <= {MAX_LEARNING_RATE:.3g}{after} (Adam's first step, 10x the "
                                 f"learning rate, must be a float32 number), got {getattr(self, name)!r}")
        number("lower_cutoff")
        if not self.lower_cutoff < MAX_LOWER_CUTOFF:
            raise ValueError(f"lower-cutoff must be < {MAX_LOWER_CUTOFF:g} (distances between unit embeddings are "
                             f"at most 2), got {self.lower_cutoff!r}")
        for name in ("upper_cutoff", "dance_upper_cutoff"):
            number(name, allow_inf=True)
            if getattr(self, name) < self.lower_cutoff:
                raise ValueError(f"{flag(name)} ({getattr(self, name)}) must be >= lower-cutoff ({self.lower_cutoff})")
        number("val_fraction", strict=False)
        if not self.val_fraction < 1:
            raise ValueError(f"val-fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.batch_size % self.samples_per_class:
            raise ValueError(f"batch-size ({self.batch_size}) must be a multiple of samples-per-class "
                             f"({self.samples_per_class})")
        if self.batch_size // self.samples_per_class < 2:
            raise ValueError("batch-size / samples-per-class must be >= 2: mining needs two classes per batch")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names among {', '.join(TASKS)}, "
                             f"got {', '.join(map(str, self.tasks)) or 'none'}")
        if self.pretrained not in PRETRAINED:
            raise ValueError(f"pretrained must be one of {', '.join(PRETRAINED)}, got {self.pretrained!r}")
        if self.pretrained == "synthetic" and self.backbone != "small":
            raise ValueError(f"pretrained synthetic is for the small backbone (backbone is {self.backbone!r}); "
                             "pass --weights for resnet50")
        if self.ops not in ("fused", "reference"):
            raise ValueError(f"ops must be 'fused' or 'reference', got {self.ops!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:INDEX, got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.eval_backend not in EVAL_BACKENDS:
            raise ValueError(f"eval-backend must be one of {', '.join(EVAL_BACKENDS)}, got {self.eval_backend!r}")
        if self.amp != "off" and not self.device.startswith("cuda"):
            # CPU autocast would run the fused ops' float32-only CPU kernels on casts: no gain.
            raise ValueError(f"amp {self.amp} needs a CUDA device (device is {self.device!r}); use --amp off on the CPU")
        for values, what in ((self.milestones, "milestones"), (self.recall_at, "recall-at")):
            for v in values:
                integer(what, value=v)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {list(self.milestones)}")
        unknown_heads = sorted(set(self.head_weights) - set(self.tasks))
        if unknown_heads:
            raise ValueError(f"head-weights name heads that are not trained: {unknown_heads}")
        for head, w in self.head_weights.items():
            number(f"head-weights {head}", strict=False, value=w)
            if w > MAX_HEAD_WEIGHT:
                raise ValueError(f"head-weights {head} must be <= {MAX_HEAD_WEIGHT:.3g} (it scales a unit embedding "
                                 f"in float32), got {w!r}")
        if all(self.head_weights.get(t, 1.0) == 0 for t in self.tasks):
            raise ValueError("head-weights are all zero; at least one head must count in the test embedding")
        return self

    def task_weight(self, task: str) -> float:
        return 1.0 if task == "discriminative" else getattr(self, f"weight_{task}")


def config_fields() -> List[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))
