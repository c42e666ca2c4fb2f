"""Tiny dataset trees in the real CUB200 / CARS196 / SOP / folder layouts, for end-to-end runs.

Each builder writes ``classes_per_split`` classes per split with ``per_class`` small images of
class-dependent colour, and returns the root to pass to ``diva_ext.data.load``.
"""

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def _image(path: Path, class_id: int, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(class_id * 1000 + i)
    base = np.array([(37 * class_id) % 256, (91 * class_id) % 256, (151 * class_id) % 256], np.uint8)
    pixels = np.clip(base + rng.integers(-20, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def cub200(root: Path, classes_per_split: int = 4, per_class: int = 4) -> Path:
    base = root / "CUB_200_2011"
    ids = list(range(1, classes_per_split + 1)) + list(range(101, 101 + classes_per_split))
    rows, labels, image_id = [], [], 0
    for class_id in ids:
        for i in range(per_class):
            image_id += 1
            relative = f"{class_id:03d}.Bird_{class_id}/img_{i}.jpg"
            _image(base / "images" / relative, class_id, i)
            rows.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
    (base / "images.txt").write_text("\n".join(rows) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def cars196(root: Path, classes_per_split: int = 4, per_class: int = 4) -> Path:
    ids = list(range(1, classes_per_split + 1)) + list(range(99, 99 + classes_per_split))
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    entries = [(c, i) for c in ids for i in range(per_class)]
    annotations = np.zeros((1, len(entries)), dtype=[(f, "O") for f in fields])
    for n, (class_id, i) in enumerate(entries):
        name = f"car_ims/{n + 1:06d}.jpg"
        _image(root / name, class_id, i)
        box = [np.array([[v]], dtype=np.uint16) for v in (1, 2, 8, 6)]
        annotations[0, n] = (name, *box, np.array([[class_id]], np.uint8), np.array([[n % 2]], np.uint8))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Car {i}" for i in range(1, 197)]
    scipy.io.savemat(str(root / "cars_annos.mat"), {"annotations": annotations, "class_names": names})
    return root


def sop(root: Path, classes_per_split: int = 4, per_class: int = 4) -> Path:
    image_id = 0
    for split, offset in (("train", 1), ("test", 1 + classes_per_split)):
        lines = ["image_id class_id super_class_id path"]
        for class_id in range(offset, offset + classes_per_split):
            for i in range(per_class):
                image_id += 1
                relative = f"bicycle_final/{class_id}_{i}.JPG"
                _image(root / relative, class_id, i)
                lines.append(f"{image_id} {class_id} 1 {relative}")
        (root / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def folder(root: Path, classes_per_split: int = 4, per_class: int = 4) -> Path:
    for split, offset in (("train", 0), ("test", classes_per_split)):
        for class_id in range(offset, offset + classes_per_split):
            for i in range(per_class):
                _image(root / split / f"class_{class_id}" / f"{i}.png", class_id + 1, i)
    return root


BUILDERS = {"cub200": cub200, "cars196": cars196, "sop": sop, "folder": folder}
