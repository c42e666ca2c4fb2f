"""``sop``: Stanford Online Products as extracted from Stanford_Online_Products.zip.

Layout: ROOT/<category>_final/<image>.JPG with Ebay_train.txt and Ebay_test.txt either in ROOT
or in ROOT/Info_Files (ROOT may also be the folder that contains Stanford_Online_Products/).
Each index file has the header "image_id class_id super_class_id path", paths relative to ROOT.
The split is the files' own: 11318 train classes, 11316 disjoint test classes.
"""

from pathlib import Path
from typing import Callable, Optional

from diva_ext.data._index_files import parse_int, read_rows
from diva_ext.data._registry import register
from diva_ext.data.images import ImageFileDataset, PathLike, build, require_root

HEADER = ("image_id", "class_id", "super_class_id", "path")


def _index_file(root: Path, split: str) -> Path:
    """(dataset root, Ebay_<split>.txt) for the layouts the downloads come in."""
    name = f"Ebay_{split}.txt"
    for base in (root, root / "Stanford_Online_Products"):
        for candidate in (base / name, base / "Info_Files" / name):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{name} not found in {root} or {root / 'Info_Files'}; expected the extracted "
                            "Stanford_Online_Products.zip")


@register("sop")
def load_sop(root: Optional[PathLike], split: str, transform: Optional[Callable], *,
             skip_corrupt: bool = False, verify: bool = False) -> ImageFileDataset:
    """Stanford Online Products; labels are the ``class_id`` column made contiguous per split.

    Options:
        skip_corrupt: decode every image now, skip unreadable ones with a warning.
        verify: decode every image now and fail listing the unreadable ones.
    """
    index = _index_file(require_root("sop", root), split)
    base = index.parent.parent if index.parent.name == "Info_Files" else index.parent
    samples = []
    for where, (_, class_id, _, relative) in read_rows(index, 4, header=HEADER):
        samples.append((str(base / relative), parse_int(class_id, where)))
    return build("sop", base, split, samples, str, transform, skip_corrupt=skip_corrupt, verify=verify)
