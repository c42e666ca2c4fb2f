"""``synthetic``: the embedded default dataset, rendered in memory from a seed (no files).

Each class is one combination of four visual factors:

- shape (8): circle, square, triangle, star, plus, ring, semicircle, ellipse
- colour (6): red, orange, yellow, green, blue, purple
- texture (4): solid, stripes, checker, dots (the pattern in a darker shade of the colour)
- part (3): none, a small white disc or a short white bar attached above the shape

giving 8 x 6 x 4 x 3 = 576 possible classes. A seeded permutation of them gives the train classes
(its first ``num_classes``) and the test classes (its last ``num_classes``), so the splits are
disjoint (zero-shot: test combinations are unseen, their factor values are not) whatever
``num_classes`` each split is asked for, up to 288.

Every image varies in nuisance factors that carry no class information: position, scale and
rotation of the object (the texture and part turn with it), the texture's phase, a +-15% jitter
of each colour channel, a background colour with a gradient, 0-3 small clutter shapes of random
shape and colour (possibly occluded by the object), global brightness (0.7-1.25x) with an
illumination gradient, and pixel noise (sigma 3% of full scale).

Default size: 100 classes x 40 images of 32 x 32 RGB per split (4000 images each), rendered in
a few seconds. Measured difficulty on the default test split: chance Recall@1 is 0.01, raw-pixel
nearest neighbours reach 0.06, and a 3-block CNN (32/64/128 channels, 128-d) trained with a
margin loss and distance-weighted mining on a 2-core AMD EPYC shared with other jobs reached 0.18 after 2 minutes and
0.28 after 5, still rising: clearly non-trivial, far from perfect.
Same seed and options -> identical images, in train and test alike.
"""

import itertools
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from diva_ext.data._registry import register
from diva_ext.data._render import PARTS, SHAPES, TEXTURES, Scenes, render

COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "orange": (1.0, 0.55, 0.0),
    "yellow": (0.95, 0.9, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.35, 0.95),
    "purple": (0.6, 0.2, 0.85),
}
FACTORS: Dict[str, Tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "part": PARTS,
}
ALL_CLASSES: List[Tuple[int, ...]] = list(itertools.product(*(range(len(v)) for v in FACTORS.values())))
MAX_CLASSES_PER_SPLIT = len(ALL_CLASSES) // 2
_MAX_DISTRACTORS = 3
_NOISE_SIGMA = 0.03
# Images rendered per torch call: bounds memory at ~100 MB whatever the dataset size.
_RENDER_CHUNK = 512


def pretrain_class_count(num_classes: int) -> int:
    """How many classes the ``pretrain`` split has when train and test have ``num_classes`` each."""
    count = len(ALL_CLASSES) - 2 * num_classes
    if count < 2:
        raise ValueError(f"synthetic: with {num_classes} train and test classes each, {max(count, 0)} of the "
                         f"{len(ALL_CLASSES)} remain for pretraining; at most {(len(ALL_CLASSES) - 2) // 2} allowed")
    return count


def split_classes(num_classes: int, split: str, seed: int) -> List[Tuple[int, ...]]:
    """The factor combinations (indices into FACTORS' value lists) of a split's classes, in label
    order. ``train``: the first ``num_classes`` of the seed's permutation, ``test``: the last
    ``num_classes``, ``pretrain``: all those in between (disjoint from both; for a pretrained
    start, diva_ext.training.pretrain)."""
    order = np.random.default_rng(seed).permutation(len(ALL_CLASSES))
    if split == "train":
        chosen = order[:num_classes]
    elif split == "test":
        chosen = order[len(order) - num_classes:]
    elif split == "pretrain":
        chosen = order[num_classes:num_classes + pretrain_class_count(num_classes)]
    else:
        raise ValueError(f"synthetic: split must be 'train', 'test' or 'pretrain', got {split!r}")
    return [ALL_CLASSES[i] for i in chosen]


def _sample_scenes(classes: List[Tuple[int, ...]], images_per_class: int, size: int,
                   rng: np.random.Generator) -> Tuple[Scenes, np.ndarray]:
    """Random scenes for every image, class-major; returns them and the int64 [N] labels."""
    labels = np.repeat(np.arange(len(classes)), images_per_class)
    factors = np.asarray(classes, dtype=np.int64)[labels]  # [N, 4]
    n, m = labels.size, _MAX_DISTRACTORS
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)
    u = lambda low, high, shape: rng.uniform(low, high, shape).astype(np.float32)  # noqa: E731
    values = dict(
        shape=factors[:, 0], colour=np.clip(palette[factors[:, 1]] * u(0.85, 1.15, (n, 3)), 0, 1),
        texture=factors[:, 2], part=factors[:, 3],
        centre=u(-0.2, 0.2, (n, 2)), angle=u(0, 2 * np.pi, n), scale=u(0.3, 0.45, n), phase=u(0, 1, (n, 2)),
        background=u(0.1, 0.6, (n, 3)), background_slope=u(-0.15, 0.15, (n, 2)),
        distractor_on=np.arange(m)[None, :] < rng.integers(0, m + 1, (n, 1)),
        distractor_shape=rng.integers(0, len(SHAPES), (n, m)), distractor_colour=u(0, 1, (n, m, 3)),
        distractor_centre=u(-0.9, 0.9, (n, m, 2)), distractor_angle=u(0, 2 * np.pi, (n, m)),
        distractor_scale=u(0.1, 0.2, (n, m)),
        brightness=u(0.7, 1.25, n), light_slope=u(-0.2, 0.2, (n, 2)),
        noise=(rng.standard_normal((n, 3, size, size), dtype=np.float32) * _NOISE_SIGMA),
    )
    return Scenes(**values), labels


def _slice(scenes: Scenes, start: int, stop: int) -> Scenes:
    return Scenes(**{k: v[start:stop] for k, v in vars(scenes).items()})


def generate(num_classes: int, images_per_class: int, image_size: int, split: str, seed: int
             ) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, ...]]]:
    """Render a split: (uint8 [N, 3, S, S] images, int64 [N] labels, factor indices per class)."""
    classes = split_classes(num_classes, split, seed)
    # Separate streams per split, so the train images do not depend on the test options or vice versa.
    rng = np.random.default_rng([seed, {"train": 1, "test": 2, "pretrain": 3}[split]])
    scenes, labels = _sample_scenes(classes, images_per_class, image_size, rng)
    images = np.concatenate([render(_slice(scenes, i, i + _RENDER_CHUNK), image_size)
                        for i in range(0, labels.size, _RENDER_CHUNK)])
    return torch.from_numpy(images), torch.from_numpy(labels), classes


class SyntheticDataset(Dataset):
    """One split of the synthetic dataset, held in memory; items are ``(image, label, index)``.

    Attributes:
        images: uint8 [N, 3, S, S] tensor (use it directly to skip per-item work).
        labels: int64 [N] tensor in [0, num_classes), class-major.
        num_classes, class_names: e.g. "red striped star + dot".
        class_factors: per class, a dict factor -> value name (see FACTORS).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: List[Tuple[int, ...]], split: str,
                 seed: int, transform: Optional[Callable] = None):
        self.images, self.labels, self.split, self.seed, self.transform = images, labels, split, seed, transform
        self.class_factors = [{f: FACTORS[f][i] for f, i in zip(FACTORS, c)} for c in classes]
        self.class_names = [f"{c['colour']} {c['texture']} {c['shape']} + {c['part']}" for c in self.class_factors]
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        image = self.transform(image) if self.transform is not None else image.float() / 255
        return image, int(self.labels[index]), index

    def __repr__(self) -> str:
        size = self.images.shape[-1]
        return (f"SyntheticDataset(split={self.split!r}, {len(self)} images of {size}x{size}, "
                f"{self.num_classes} classes, seed={self.seed})")


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"synthetic: {name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


@register("synthetic")
def load_synthetic(root, split: str, transform: Optional[Callable], *, num_classes: int = 100,
                   images_per_class: int = 40, image_size: int = 32, seed: int = 0) -> SyntheticDataset:
    """Render the synthetic dataset's split (see the module docstring).

    Options:
        num_classes: classes in this split, 1-288 (train and test classes never overlap).
        images_per_class: images rendered per class (>= 1).
        image_size: side of the square RGB images in pixels, 16-256.
        seed: chooses the classes of each split and every image; same seed, same data.
    """
    if root is not None:
        raise ValueError(f"synthetic is rendered in memory and reads no files; pass root=None, not {root!r}")
    num_classes = _check_int("num_classes", num_classes, 1, MAX_CLASSES_PER_SPLIT)
    images_per_class = _check_int("images_per_class", images_per_class, 1, 100_000)
    image_size = _check_int("image_size", image_size, 16, 256)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    images, labels, classes = generate(num_classes, images_per_class, image_size, split, seed)
    return SyntheticDataset(images, labels, classes, split, seed, transform)
