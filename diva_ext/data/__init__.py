"""Datasets, samplers and transforms for zero-shot deep metric learning.

``load(name, root=None, split="train"|"test", transform=None, **options)`` builds one split of
``synthetic`` (rendered in memory, the default), ``folder``, ``cub200``, ``cars196`` or ``sop``;
train and test classes are disjoint. Items are ``(image, label, index)``; every dataset has
``.labels`` (int64 [N]), ``.num_classes`` and ``.class_names``.
``ClassBalancedBatchSampler`` makes DiVA's batches (``samples_per_class`` images of each class);
``make_transforms("resnet" | "small")`` gives (train, test) transforms; ``TwoViews`` wraps one to
produce two augmented views per item.
"""

# Importing the loader modules registers them.
from diva_ext.data import cars196, cub200, folder, sop, synthetic  # noqa: F401
from diva_ext.data._registry import available, load, parse_options, register
from diva_ext.data.images import ImageFileDataset, UnreadableImageError
from diva_ext.data.sampler import ClassBalancedBatchSampler
from diva_ext.data.synthetic import SyntheticDataset
from diva_ext.data.transforms import TwoViews, make_transforms

__all__ = [
    "load", "available", "parse_options", "register", "ImageFileDataset", "SyntheticDataset", "UnreadableImageError",
    "ClassBalancedBatchSampler", "TwoViews", "make_transforms",
]
