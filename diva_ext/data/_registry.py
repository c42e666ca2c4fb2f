"""The named dataset loaders behind diva_ext.data.load (exact names, no substring matching)."""

import inspect
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Union

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


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _option_kinds(name: str) -> Dict[str, type]:
    """Each keyword option of loader ``name`` -> the type of its default (bool, int, float or str)."""
    params = inspect.signature(_LOADERS[name]).parameters.values()
    return {p.name: type(p.default) if p.default is not inspect.Parameter.empty else str
            for p in params if p.kind is p.KEYWORD_ONLY}


def _parse_value(key: str, kind: type, text: str):
    if kind is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ValueError(f"data option {key}: expected true/false/1/0/yes/no, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"data option {key}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"data option {key}: expected a finite number, got {text!r}")
        return value
    return text


def parse_options(name: str, texts: Mapping[str, str]) -> Dict[str, object]:
    """Text values (``--data-option NAME=VALUE``) -> typed options of loader ``name``, each parsed
    as its default's type: booleans from true/false/1/0/yes/no, integers, finite floats."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(available())}")
    kinds = _option_kinds(name)
    unknown = sorted(set(texts) - set(kinds))
    if unknown:
        raise TypeError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
                        f"it accepts {', '.join(kinds) if kinds else 'none'}")
    return {key: _parse_value(key, kinds[key], text) for key, text in texts.items()}


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
