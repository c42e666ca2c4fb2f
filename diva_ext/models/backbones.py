"""Backbones: torchvision's ResNet50 (the paper's) and a small CNN sized for CPU training.

Each builder returns ``(module, feature_dim)``; the module maps images [B, 3, H, W] to globally
average-pooled features [B, feature_dim].
"""

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn


class FrozenBatchNormStatistics(nn.Module):
    """Wraps a module so that its BatchNorm layers always run in eval mode (running statistics
    frozen), also after ``.train()``; their affine weight and bias still train. As in DiVA (and
    most DML code on ImageNet-pretrained ResNets): small class-balanced batches would otherwise
    overwrite the pretrained statistics. A subclass rather than a patched method, so that deep
    copies (the momentum encoder) keep the behaviour."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


def freeze_batchnorm_statistics(module: nn.Module) -> nn.Module:
    """``module`` wrapped in FrozenBatchNormStatistics."""
    return FrozenBatchNormStatistics(module)


def _load_weights(model: nn.Module, weights: Path, what: str = "torchvision's resnet50",
                  ignored: str = "fc.") -> None:
    """Load a state dict file into ``model`` (``what`` names it in errors): a torchvision-format
    one for resnet50 (e.g. resnet50-*.pth), or the small CNN's own; keys starting with
    ``ignored`` (the classifier) and a ``module.`` prefix (DataParallel) are dropped."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise ValueError(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not (ignored and k.startswith(ignored))}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"weights file {path} does not match {what}: {str(err).splitlines()[-1].strip()}") from err
    missing = [k for k in missing if not (ignored and k.startswith(ignored))]
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} does not match {what}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def resnet50(weights: Optional[Path] = None, frozen_bn: bool = True) -> Tuple[nn.Module, int]:
    """torchvision ResNet50 without its classifier: [B, 3, H, W] -> [B, 2048].

    Nothing is downloaded: pass a local torchvision state dict file (e.g. ImageNet weights), or
    get random initialisation."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    if weights is not None:
        _load_weights(model, weights)
    model.fc = nn.Identity()
    return (freeze_batchnorm_statistics(model) if frozen_bn else model), 2048


class SmallCNN(nn.Module):
    """Four conv blocks (conv-BN-ReLU x2, then 2x2 max pool) and global average pooling.

    Sized for small images (32-64 px) and CPU training; BatchNorm statistics train normally
    (there are no pretrained statistics to protect)."""

    def __init__(self, width: int = 32, in_channels: int = 3):
        super().__init__()
        layers = []
        channels = in_channels
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


def small_cnn(weights: Optional[Path] = None, frozen_bn: bool = False, width: int = 32) -> Tuple[nn.Module, int]:
    """SmallCNN; ``weights``: a state dict file of it (e.g. from `diva pretrain --out`), whose
    keys must match exactly."""
    model = SmallCNN(width)
    if weights is not None:
        _load_weights(model, weights, what="the small backbone (SmallCNN)", ignored="")
    return (freeze_batchnorm_statistics(model) if frozen_bn else model), model.out_dim


BACKBONES: Dict[str, Callable[..., Tuple[nn.Module, int]]] = {"resnet50": resnet50, "small": small_cnn}


def build_backbone(name: str, weights: Optional[Path] = None, frozen_bn: Optional[bool] = None) -> Tuple[nn.Module, int]:
    """Backbone by name (``resnet50`` or ``small``); BN statistics are frozen by default for
    resnet50 only."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    if frozen_bn is None:
        frozen_bn = name == "resnet50"
    return BACKBONES[name](weights=weights, frozen_bn=frozen_bn)
