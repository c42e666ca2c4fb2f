"""``cub200``: Caltech-UCSD Birds-200-2011 as extracted from CUB_200_2011.tgz.

Layout: ROOT/CUB_200_2011/images/<NNN.Class_Name>/<image>.jpg (ROOT may also be CUB_200_2011
itself), with images.txt + image_class_labels.txt (+ classes.txt) beside images/. Without the
two index files, the class number is taken from the folder name's "NNN." prefix.
Zero-shot split: classes 1-100 train, 101-200 test.
"""

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from torchvision.datasets.folder import IMG_EXTENSIONS

from diva_ext.data._index_files import parse_int, read_rows
from diva_ext.data._registry import register
from diva_ext.data.images import ImageFileDataset, PathLike, build, require_root

NUM_CLASSES = 200
TRAIN_CLASSES = range(1, 101)


def _base_dir(root: Path) -> Path:
    for candidate in (root / "CUB_200_2011", root):
        if (candidate / "images").is_dir():
            return candidate
    raise FileNotFoundError(
        f"CUB_200_2011/images not found under {root}; expected the extracted CUB_200_2011.tgz "
        "(ROOT/CUB_200_2011/images/<class folder>/<image>.jpg)"
    )


def _from_index_files(base: Path) -> List[Tuple[str, int]]:
    """``(path, class id)`` from images.txt and image_class_labels.txt."""
    images: Dict[int, str] = {}
    for where, (image_id, relative) in read_rows(base / "images.txt", 2):
        images[parse_int(image_id, where)] = str(base / "images" / relative)
    classes: Dict[int, int] = {}
    for where, (image_id, class_id) in read_rows(base / "image_class_labels.txt", 2):
        classes[parse_int(image_id, where)] = parse_int(class_id, where)
    if images.keys() != classes.keys():
        unlisted = sorted(images.keys() - classes.keys())[:5]
        unknown = sorted(classes.keys() - images.keys())[:5]
        raise ValueError(f"images.txt and image_class_labels.txt in {base} disagree: image ids without a class "
                         f"{unlisted}, classes for unknown image ids {unknown}")
    return [(images[i], classes[i]) for i in sorted(images)]


def _from_folders(images_dir: Path) -> List[Tuple[str, int]]:
    """``(path, class id)`` from the NNN.Class_Name folder names."""
    samples = []
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        number = folder.name.split(".", 1)[0]
        if not number.isdigit():
            raise ValueError(f"CUB class folder {folder} does not start with a class number like '001.'")
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in IMG_EXTENSIONS and image.is_file():
                samples.append((str(image), int(number)))
    return samples


def _class_names(base: Path, samples: List[Tuple[str, int]]) -> Dict[int, str]:
    """Class id -> name, from classes.txt or else the images' folder names."""
    if (base / "classes.txt").is_file():
        return {parse_int(i, where): name for where, (i, name) in read_rows(base / "classes.txt", 2)}
    return {class_id: Path(path).parent.name for path, class_id in samples}


@register("cub200")
def load_cub200(root: Optional[PathLike], split: str, transform: Optional[Callable], *,
                skip_corrupt: bool = False, verify: bool = False) -> ImageFileDataset:
    """CUB200-2011; train = classes 1-100, test = classes 101-200.

    Options:
        skip_corrupt: decode every image now, skip unreadable ones with a warning.
        verify: decode every image now and fail listing the unreadable ones.
    """
    base = _base_dir(require_root("cub200", root))
    index_files = [base / "images.txt", base / "image_class_labels.txt"]
    present = [f.is_file() for f in index_files]
    if all(present):
        samples = _from_index_files(base)
    elif any(present):
        missing = index_files[present.index(False)]
        raise FileNotFoundError(f"{missing} not found, but {index_files[present.index(True)].name} is there; "
                                "expected both (or neither, to use the class folder names)")
    else:
        samples = _from_folders(base / "images")
    for path, class_id in samples:
        if not 1 <= class_id <= NUM_CLASSES:
            raise ValueError(f"cub200: class id {class_id} of {path} is outside 1-{NUM_CLASSES}")
    names = _class_names(base, samples)
    wanted = [(p, c) for p, c in samples if (c in TRAIN_CLASSES) == (split == "train")]
    return build("cub200", base, split, wanted, lambda c: names.get(c, str(c)), transform,
                 skip_corrupt=skip_corrupt, verify=verify)
