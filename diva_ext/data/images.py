"""Datasets of image files on disk: reading, checking and labelling them."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Hashable, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor
from tqdm.auto import tqdm

PathLike = Union[str, os.PathLike]
# How many offending paths an error or warning lists before "and N more".
_LIST_AT_MOST = 5


class UnreadableImageError(OSError):
    """An image file that PIL cannot decode (corrupt, truncated, or not an image)."""


def read_image(path: str) -> Image.Image:
    """The RGB image at ``path``; :class:`UnreadableImageError` naming the path if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"cannot read image {path}: {error}") from error


def _decode_error(path: str) -> Optional[Tuple[str, str]]:
    """None if ``path`` decodes, else ``(path, why not)``. JPEGs decode at reduced scale (draft): much faster,
    and it still reads the whole stream, so truncation is caught."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return path, str(error)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    return shown + (f", and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else "")


def check_files(dataset: str, root: PathLike, paths: Sequence[str]) -> None:
    """FileNotFoundError listing the paths that a dataset's index names but the disk lacks."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} of {len(paths)} listed images are missing under {root}: {_listing(missing)}"
        )


def find_unreadable(paths: Sequence[str], progress: Optional[bool] = None) -> List[Tuple[str, str]]:
    """Decode every image (threads: PIL releases the GIL); ``(path, reason)`` of those that fail."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = tqdm(pool.map(_decode_error, paths), total=len(paths), desc="checking images",
                       unit="img", leave=False, disable=None if progress is None else not progress)
        return [r for r in results if r is not None]


class ImageFileDataset(Dataset):
    """Labelled image files; items are ``(image, label, index)``.

    Attributes:
        paths: list of N file paths.
        labels: int64 [N] tensor, contiguous class ids in [0, num_classes).
        class_names: list of num_classes names, ``class_names[label]``.
        num_classes: number of classes in this split.
        name, split, root: where it came from (for messages and repr).
    """

    def __init__(self, name: str, root: PathLike, split: str, paths: Sequence[str], labels: Sequence[int],
                 class_names: Sequence[str], transform: Optional[Callable] = None):
        self.name, self.root, self.split = name, str(root), split
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[object, int, int]:
        image = read_image(self.paths[index])
        image = self.transform(image) if self.transform is not None else to_tensor(image)
        return image, int(self.labels[index]), index

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, {len(self)} images, "
                f"{self.num_classes} classes, root={self.root!r})")


def build(
    name: str,
    root: PathLike,
    split: str,
    samples: Sequence[Tuple[str, Hashable]],
    class_name: Callable[[Hashable], str],
    transform: Optional[Callable],
    *,
    skip_corrupt: bool = False,
    verify: bool = False,
) -> ImageFileDataset:
    """Turn ``(path, class key)`` pairs into a dataset with contiguous labels (sorted keys -> 0..C-1).

    Missing files are an error. With ``verify`` every image is decoded now and any unreadable one is
    an error listing them; with ``skip_corrupt`` they are decoded now, skipped with a warning that
    lists them, and classes left empty disappear. Otherwise an unreadable image raises
    :class:`UnreadableImageError` (naming it) when the item is read.
    """
    if not samples:
        raise ValueError(f"{name}: no images for split {split!r} under {root}")
    paths = [p for p, _ in samples]
    check_files(name, root, paths)
    if verify or skip_corrupt:
        bad = find_unreadable(paths)
        described = [f"{path} ({reason})" for path, reason in bad]
        if bad and not skip_corrupt:
            raise UnreadableImageError(f"{name}: {len(bad)} unreadable images under {root}: {_listing(described)}")
        if bad:
            # stacklevel 4: build <- the loader <- load() <- the caller.
            warnings.warn(f"{name}: skipping {len(bad)} unreadable images: {_listing(described)}", stacklevel=4)
            bad_paths = {path for path, _ in bad}
            samples = [s for s in samples if s[0] not in bad_paths]
            if not samples:
                raise ValueError(f"{name}: every image of split {split!r} under {root} is unreadable")
    keys = sorted({key for _, key in samples})
    index_of = {key: i for i, key in enumerate(keys)}
    return ImageFileDataset(
        name, root, split, [p for p, _ in samples], [index_of[k] for _, k in samples],
        [class_name(k) for k in keys], transform,
    )


def require_root(name: str, root: Optional[PathLike]) -> Path:
    """The dataset root as an existing directory, or an error saying what is wrong with it."""
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<directory of the extracted download>")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name} root {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{name} root {path} is not a directory")
    return path
