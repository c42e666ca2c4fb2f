"""``cars196``: Stanford Cars as extracted: ROOT/car_ims/<image>.jpg and ROOT/cars_annos.mat.

Class ids come from the annotations' ``class`` field (1-196); the zero-shot split puts classes
1-98 in train and 99-196 in test (the annotations' own ``test`` flag is a different, per-image
split and is ignored).
"""

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.io

from diva_ext.data._registry import register
from diva_ext.data.images import ImageFileDataset, PathLike, build, require_root

NUM_CLASSES = 196
TRAIN_CLASSES = range(1, 99)


def _read_annotations(mat_path: Path) -> Tuple[List[Tuple[str, int]], Dict[int, str]]:
    """``(relative path, class id)`` per image and class id -> name from cars_annos.mat."""
    try:
        contents = scipy.io.loadmat(str(mat_path), simplify_cells=True)
    except Exception as error:  # scipy raises several types (MatReadError, ValueError, TypeError...)
        raise ValueError(f"cannot read {mat_path} as a MATLAB file: {error}") from None
    annotations = contents.get("annotations")
    if annotations is None:
        raise ValueError(f"{mat_path} has no 'annotations' struct; is it Stanford Cars' cars_annos.mat?")
    # simplify_cells turns a 1x1 struct array into a dict and longer ones into lists of dicts.
    if isinstance(annotations, dict):
        annotations = [annotations]
    samples = []
    for number, entry in enumerate(annotations, start=1):
        if not isinstance(entry, dict) or "relative_im_path" not in entry or "class" not in entry:
            raise ValueError(f"{mat_path}: annotation {number} lacks the fields 'relative_im_path' and 'class'")
        class_id = np.asarray(entry["class"])
        if class_id.size != 1 or not np.issubdtype(class_id.dtype, np.number):
            raise ValueError(f"{mat_path}: annotation {number} has class {entry['class']!r}, expected one number")
        samples.append((str(entry["relative_im_path"]), int(class_id)))
    names = contents.get("class_names")
    names = {i: str(n) for i, n in enumerate(np.atleast_1d(names), start=1)} if names is not None else {}
    return samples, names


@register("cars196")
def load_cars196(root: Optional[PathLike], split: str, transform: Optional[Callable], *,
                 skip_corrupt: bool = False, verify: bool = False) -> ImageFileDataset:
    """Stanford Cars 196; train = classes 1-98, test = classes 99-196.

    Options:
        skip_corrupt: decode every image now, skip unreadable ones with a warning.
        verify: decode every image now and fail listing the unreadable ones.
    """
    root = require_root("cars196", root)
    mat_path = root / "cars_annos.mat"
    if not mat_path.is_file():
        raise FileNotFoundError(f"cars_annos.mat not found under {root}; expected Stanford Cars' "
                                "cars_annos.mat next to the extracted car_ims/")
    if not (root / "car_ims").is_dir():
        raise FileNotFoundError(f"car_ims/ not found under {root}; expected the extracted car_ims.tgz")
    samples, names = _read_annotations(mat_path)
    for relative, class_id in samples:
        if not 1 <= class_id <= NUM_CLASSES:
            raise ValueError(f"{mat_path}: class id {class_id} of {relative} is outside 1-{NUM_CLASSES}")
    wanted = [(str(root / p), c) for p, c in samples if (c in TRAIN_CLASSES) == (split == "train")]
    return build("cars196", root, split, wanted, lambda c: names.get(c, str(c)), transform,
                 skip_corrupt=skip_corrupt, verify=verify)
