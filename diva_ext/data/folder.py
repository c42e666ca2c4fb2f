"""``folder``: any ROOT/train/<class>/<image> + ROOT/test/<class>/<image> tree, or ROOT/<class>/<image>
whose sorted classes are split in half (first half train, the rest test)."""

import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from diva_ext.data._registry import register
from diva_ext.data.images import ImageFileDataset, PathLike, build, require_root


def _samples(directory: Path, classes: List[str]) -> List[Tuple[str, str]]:
    """``(path, class name)`` pairs. torchvision walks each class folder recursively and raises
    FileNotFoundError naming any class folder without an image file."""
    return make_dataset(str(directory), {c: c for c in classes}, IMG_EXTENSIONS)


@register("folder")
def load_folder(root: Optional[PathLike], split: str, transform: Optional[Callable], *,
                skip_corrupt: bool = False, verify: bool = False) -> ImageFileDataset:
    """Images in class folders. Labels follow the sorted class-folder names of the split.

    Options:
        skip_corrupt: decode every image now, skip unreadable ones with a warning.
        verify: decode every image now and fail listing the unreadable ones.
    """
    root = require_root("folder", root)
    split_dirs = {s: root / s for s in ("train", "test")}
    present = [s for s, d in split_dirs.items() if d.is_dir()]
    if len(present) == 1:
        missing = "test" if present == ["train"] else "train"
        raise FileNotFoundError(
            f"folder: {root} has {present[0]}/ but no {missing}/; expected ROOT/train/<class>/<image> "
            f"and ROOT/test/<class>/<image>, or only ROOT/<class>/<image>"
        )
    if present:
        directory = split_dirs[split]
        classes = find_classes(str(directory))[0]
        other = set(find_classes(str(split_dirs["test" if split == "train" else "train"]))[0])
        shared = sorted(other & set(classes))
        if shared:
            warnings.warn(f"folder: classes {shared[:5]} are in both train/ and test/ under {root}; "
                          "zero-shot evaluation expects disjoint classes", stacklevel=3)
    else:
        directory = root
        everything = find_classes(str(root))[0]
        if len(everything) < 2:
            raise ValueError(f"folder: {root} needs at least 2 class folders to split in half, found {len(everything)}")
        half = (len(everything) + 1) // 2
        classes = everything[:half] if split == "train" else everything[half:]
    samples = _samples(directory, classes)
    return build("folder", root, split, samples, str, transform, skip_corrupt=skip_corrupt, verify=verify)
