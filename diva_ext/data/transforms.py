"""Image transforms: the paper's ResNet pipelines, small-image variants for CPU runs, and two views.

All accept a PIL image or a uint8 [3, H, W] tensor and return a float32 [3, size, size] tensor
normalised with the ImageNet statistics.
"""

from typing import Callable, Optional, Tuple

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finish() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.ToPureTensor()]


def resnet_train_transform(size: int = 224) -> v2.Compose:
    """DiVA's training augmentation: RandomResizedCrop(224) and a horizontal flip."""
    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), *_finish()])


def resnet_test_transform(resize: int = 256, size: int = 224) -> v2.Compose:
    """DiVA's test pipeline: Resize(256) of the short side, CenterCrop(224)."""
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(size), *_finish()])


def small_train_transform(size: int = 32) -> v2.Compose:
    """Augmentation for small images (e.g. the synthetic set): mild crops and flips only. Colour
    jitter is left out on purpose: colour is a class factor of the synthetic data."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        *_finish(),
    ])


def selfsimilarity_view_transform(size: int) -> v2.Compose:
    """The paper's augmentation for the self-similarity (MoCo) views, at any image size:
    RandomResizedCrop(size) over scale (0.08, 1) and aspect ratio (3/4, 4/3), and a horizontal
    flip. Each call draws its own crop, so two views of one image are independent; crops down to
    8% of the image make the two views differ as much as on real images, so that the positive
    pair is not trivially close (with the `small` transform's 0.8-1 crops it is)."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        *_finish(),
    ])


def small_test_transform(size: int = 32) -> v2.Compose:
    """Resize the short side to ``size`` and centre-crop (a no-op for square images of that size)."""
    return v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size), *_finish()])


_KINDS = {
    "resnet": (resnet_train_transform, resnet_test_transform, 224),
    "small": (small_train_transform, small_test_transform, 32),
}


def make_transforms(kind: str, size: Optional[int] = None) -> Tuple[Callable, Callable]:
    """``(train, test)`` transforms of a named kind: ``"resnet"`` (224 px) or ``"small"`` (32 px).

    ``size`` overrides the output side (for ``resnet`` the test resize keeps the 256/224 ratio).
    """
    train, test, _ = _KINDS[_known_kind(kind)]
    size = output_size(kind, size)
    if kind == "resnet":
        return train(size), test(round(size * 256 / 224), size)
    return train(size), test(size)


def _known_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; choose one of {', '.join(sorted(_KINDS))}")
    return kind


def output_size(kind: str, size: Optional[int] = None) -> int:
    """The side of the images a transform kind produces: ``size``, or the kind's default."""
    size = _KINDS[_known_kind(kind)][2] if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return size


class TwoViews:
    """Two independently augmented views of one image, e.g. for the self-similarity (MoCo) task.

    ``TwoViews(t)(image) -> (t(image), t(image))`` with independent random draws; ``second`` gives
    the second view its own transform. Batched by the default collate as a pair of [B, ...] tensors.
    """

    def __init__(self, transform: Callable, second: Optional[Callable] = None):
        self.first, self.second = transform, second if second is not None else transform

    def __call__(self, image):
        return self.first(image), self.second(image)

    def __repr__(self) -> str:
        return f"TwoViews({self.first!r}, {self.second!r})"
