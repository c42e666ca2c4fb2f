"""Datasets, samplers and transforms for zero-shot deep metric learning.

``load(name, root=None, split="train"|"test", transform=None, **options)`` builds one split of
``synthetic`` (rendered in memory, the default), ``folder``, ``cub200``, ``cars196`` or ``sop``;
train and test classes are disjoint. Items are ``(image, label, index)``; every dataset has
``.labels`` (int64 [N]), ``.num_classes`` and ``.class_names``.
"""

# Importing the loader modules registers them.
from diva_ext.data import cars196, cub200, folder, sop, synthetic  # noqa: F401
from diva_ext.data._registry import available, load, register
from diva_ext.data.images import ImageFileDataset, UnreadableImageError
from diva_ext.data.synthetic import SyntheticDataset

__all__ = ["load", "available", "register", "ImageFileDataset", "SyntheticDataset", "UnreadableImageError"]
