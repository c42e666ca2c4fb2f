"""Training configuration: one flat dataclass, filled from a named preset and then overridden
field by field (every hyperparameter is a `diva train` flag)."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from diva_ext.models import TASKS

AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class TrainConfig:
    # Data
    dataset: str = "synthetic"
    data_root: Optional[str] = None
    transform: str = "small"          # "small" (CPU-sized images) or "resnet" (224 px)
    image_size: Optional[int] = None  # None: the transform's default
    workers: int = 0
    # Model
    backbone: str = "small"
    weights: Optional[str] = None     # local torchvision state dict for resnet50
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
    upper_cutoff: float = 1.4
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
        """Raise ValueError naming the first setting that makes no sense."""
        def positive(name, integer=True):
            v = getattr(self, name)
            if (integer and (not isinstance(v, int) or isinstance(v, bool))) or v <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be a positive {'integer' if integer else 'number'}, got {v!r}")

        for name in ("epochs", "batch_size", "samples_per_class", "embed_dim", "queue_batches", "eval_every"):
            positive(name)
        for name in ("lr", "beta_lr", "decorrelation_lr", "temperature", "gamma"):
            positive(name, integer=False)
        if self.batches_per_epoch is not None:
            positive("batches_per_epoch")
        if self.batch_size % self.samples_per_class:
            raise ValueError(f"batch-size ({self.batch_size}) must be a multiple of samples-per-class ({self.samples_per_class})")
        if self.batch_size // self.samples_per_class < 2:
            raise ValueError("batch-size / samples-per-class must be >= 2: mining needs two classes per batch")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names among {', '.join(TASKS)}, got {', '.join(self.tasks) or 'none'}")
        if self.ops not in ("fused", "reference"):
            raise ValueError(f"ops must be 'fused' or 'reference', got {self.ops!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.amp != "off" and not self.device.startswith("cuda"):
            # CPU autocast would run the fused ops' float32-only CPU kernels on casts: no gain.
            raise ValueError(f"amp {self.amp} needs a CUDA device (device is {self.device!r}); use --amp off on the CPU")
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {list(self.milestones)}")
        if any(k <= 0 for k in self.recall_at):
            raise ValueError(f"recall-at values must be positive, got {list(self.recall_at)}")
        for name in ("weight_selfsimilarity", "weight_shared", "weight_intra", "rho", "weight_decay", "margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        unknown_heads = sorted(set(self.head_weights) - set(self.tasks))
        if unknown_heads:
            raise ValueError(f"head-weights name heads that are not trained: {unknown_heads}")
        return self

    def task_weight(self, task: str) -> float:
        return 1.0 if task == "discriminative" else getattr(self, f"weight_{task}")


def config_fields() -> List[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))
