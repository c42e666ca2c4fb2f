"""The named dataset loaders behind diva_ext.data.load (exact names, no substring matching)."""

import inspect
import os
from typing import Callable, Dict, List, Optional, Union

from torch.utils.data import Dataset

Loader = Callable[..., Dataset]
_LOADERS: Dict[str, Loader] = {}
SPLITS = ("train", "test")


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make ``loader(root, split, transform, **options)`` available as ``load(name)``."""

    def decorate(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"dataset loader {name!r} is already registered")
        _LOADERS[name] = loader
        return loader

    return decorate


def available() -> List[str]:
    """Names accepted by :func:`load`, sorted."""
    return sorted(_LOADERS)


def load(
    name: str,
    root: Optional[Union[str, os.PathLike]] = None,
    split: str = "train",
    transform: Optional[Callable] = None,
    **options,
) -> Dataset:
    """Build one split of a named dataset.

    Args:
        name: one of :func:`available` (``synthetic``, ``folder``, ``cub200``, ``cars196``, ``sop``).
        root: the extracted dataset's directory (``None`` for ``synthetic``, which has no files).
        split: ``"train"`` or ``"test"``; their classes are disjoint (the zero-shot protocol).
        transform: applied to each image (a PIL RGB image for datasets on disk, a uint8 [3, H, W]
            tensor for ``synthetic``); ``None`` gives a float32 [3, H, W] tensor in [0, 1].
        **options: loader-specific, see each loader (e.g. ``skip_corrupt`` or ``num_classes``).

    Returns:
        A map-style Dataset whose items are ``(image, label, index)``, label an int in
        [0, num_classes); it has ``.labels`` (int64 [N] tensor), ``.num_classes`` and
        ``.class_names``, so samplers need not read images.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(available())}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    loader = _LOADERS[name]
    accepted = [p.name for p in inspect.signature(loader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(accepted) if accepted else 'none'}"
        )
    return loader(root, split, transform, **options)
