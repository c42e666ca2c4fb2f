"""``synthetic``: the embedded default dataset, rendered in memory from a seed (no files).

Each class is one combination of four visual factors:

- shape (8): circle, square, triangle, star, plus, ring, semicircle, ellipse
- colour (8): red, orange, yellow, green, cyan, blue, purple, pink
- texture (4): solid, stripes, checker, dots (the pattern in a darker shade of the colour)
- part (3): none, a small white disc or a short white bar attached above the shape

How the classes split (``train_part``, generator version 2):

- ``"varies"`` (the default): a train class is a (shape, colour, texture) triple whose images
  show every part, drawn per image: the part is intra-class variation of the train classes. A
  test class fixes all four factors, so test classes that share a triple differ only in the part
  (about 4 in 10 at the default size). Train triples come from one half of a seeded permutation
  of the 256 triples, test and pretraining classes (disjoint from each other, all four factors
  fixed) from the 384 four-factor combinations of the other half, so no test class's triple is a
  train class's. This plants the situation DiVA's extra tasks are meant for: what varies inside
  the train classes (and what a classification-pretrained backbone has learnt) separates test
  classes, while a purely discriminative objective on the train classes is trained to ignore it.
  (Measured, one seed, small-cpu: the margin baseline still beats DiVA on it; see the README.)
- ``"fixed"`` (version 1's design): every split's classes fix all four factors; train and test
  are disjoint combinations from one seeded permutation of the 768 (its first and last
  ``num_classes``), pretraining gets those in between. Every factor value of the test classes
  then appears in the train classes and every intra-class difference is pure nuisance, so the
  discriminative objective can learn all that separates test classes and what the auxiliary
  tasks add is, on this data, nuisance.

Every image varies in nuisance factors that carry no class information: position, scale and
rotation of the object (the texture and part turn with it), the texture's phase, a +-15% jitter
of each colour channel, a background colour with a gradient, 0-3 small clutter shapes of random
shape and colour (possibly occluded by the object), global brightness (0.7-1.25x) with an
illumination gradient, and pixel noise (sigma 3% of full scale).

Default size: 100 classes x 40 images of 32 x 32 RGB per split (4000 images each), rendered in
a few seconds. Measured difficulty on version 1's default test split (6 colours, parts fixed):
chance Recall@1 is 0.01, raw-pixel nearest neighbours reach 0.06, and a 3-block CNN (32/64/128 channels, 128-d) trained with a
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
    "cyan": (0.1, 0.8, 0.85),
    "blue": (0.15, 0.35, 0.95),
    "purple": (0.6, 0.2, 0.85),
    "pink": (0.95, 0.45, 0.7),
}
FACTORS: Dict[str, Tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "part": PARTS,
}
ALL_CLASSES: List[Tuple[int, ...]] = list(itertools.product(*(range(len(v)) for v in FACTORS.values())))
# (shape, colour, texture): what a train class fixes when its part varies.
TRIPLES: List[Tuple[int, ...]] = list(itertools.product(*(range(len(v)) for v in list(FACTORS.values())[:3])))
# Bump when the same options render other images (the pretraining cache's key includes it).
GENERATOR_VERSION = 2
TRAIN_PARTS = ("varies", "fixed")
# The part factor of a class whose images draw it per image.
ANY_PART = -1
MAX_CLASSES_PER_SPLIT = {"varies": len(TRIPLES) // 2, "fixed": len(ALL_CLASSES) // 2}
# ... and with at least 2 classes left for pretraining.
MAX_PRETRAINED_CLASSES_PER_SPLIT = {"varies": len(TRIPLES) // 2, "fixed": (len(ALL_CLASSES) - 2) // 2}
_MAX_DISTRACTORS = 3
_NOISE_SIGMA = 0.03
# Images rendered per torch call: bounds memory at ~100 MB whatever the dataset size.
_RENDER_CHUNK = 512


def _check_train_part(train_part: str) -> str:
    if train_part not in TRAIN_PARTS:
        raise ValueError(f"synthetic: train_part must be one of {', '.join(TRAIN_PARTS)}, got {train_part!r}")
    return train_part


def _held_out_classes(seed: int) -> List[Tuple[int, ...]]:
    """"varies": the four-factor classes of the triples that train never uses, seeded order
    (test takes the last ones, pretraining the rest)."""
    back = np.random.default_rng(seed).permutation(len(TRIPLES))[len(TRIPLES) // 2:]
    tuples = [TRIPLES[t] + (p,) for t in back for p in range(len(PARTS))]
    return [tuples[i] for i in np.random.default_rng([seed, 7]).permutation(len(tuples))]


def pretrain_class_count(num_classes: int, train_part: str = "varies") -> int:
    """How many classes the ``pretrain`` split has when train and test have ``num_classes`` each."""
    if _check_train_part(train_part) == "varies":
        count = len(TRIPLES) // 2 * len(PARTS) - num_classes
    else:
        count = len(ALL_CLASSES) - 2 * num_classes
    if count < 2 or num_classes > MAX_CLASSES_PER_SPLIT[train_part]:
        raise ValueError(f"synthetic: with train_part {train_part}, num_classes (train and test each) must be at "
                         f"most {MAX_PRETRAINED_CLASSES_PER_SPLIT[train_part]} for a pretraining split, "
                         f"got {num_classes}")
    return count


def split_classes(num_classes: int, split: str, seed: int, train_part: str = "varies") -> List[Tuple[int, ...]]:
    """The factor combinations (indices into FACTORS' value lists; the part ANY_PART where it
    varies per image) of a split's classes, in label order, for the design ``train_part`` (see
    the module docstring). ``pretrain``: the classes disjoint from both train and test (for a
    pretrained start, diva_ext.training.pretrain)."""
    if split not in ("train", "test", "pretrain"):
        raise ValueError(f"synthetic: split must be 'train', 'test' or 'pretrain', got {split!r}")
    if _check_train_part(train_part) == "varies":
        if split == "train":
            front = np.random.default_rng(seed).permutation(len(TRIPLES))[:num_classes]
            return [TRIPLES[t] + (ANY_PART,) for t in front]
        held_out = _held_out_classes(seed)
        if split == "test":
            return held_out[len(held_out) - num_classes:]
        return held_out[:pretrain_class_count(num_classes, train_part)]
    order = np.random.default_rng(seed).permutation(len(ALL_CLASSES))
    if split == "train":
        chosen = order[:num_classes]
    elif split == "test":
        chosen = order[len(order) - num_classes:]
    else:
        chosen = order[num_classes:num_classes + pretrain_class_count(num_classes, train_part)]
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
    drawn_part = rng.integers(0, len(PARTS), n)
    values["part"] = np.where(values["part"] == ANY_PART, drawn_part, values["part"])
    return Scenes(**values), labels


def _slice(scenes: Scenes, start: int, stop: int) -> Scenes:
    return Scenes(**{k: v[start:stop] for k, v in vars(scenes).items()})


def generate(num_classes: int, images_per_class: int, image_size: int, split: str, seed: int,
             train_part: str = "varies") -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, ...]]]:
    """Render a split: (uint8 [N, 3, S, S] images, int64 [N] labels, factor indices per class)."""
    classes = split_classes(num_classes, split, seed, train_part)
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
        self.class_factors = [{f: FACTORS[f][i] if i != ANY_PART else "any" for f, i in zip(FACTORS, c)}
                              for c in classes]
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
                   images_per_class: int = 40, image_size: int = 32, seed: int = 0,
                   train_part: str = "varies") -> SyntheticDataset:
    """Render the synthetic dataset's split (see the module docstring).

    Options:
        num_classes: classes in this split, 1-128 (1-384 with train_part fixed; train and test
            classes never overlap).
        images_per_class: images rendered per class (>= 1).
        image_size: side of the square RGB images in pixels, 16-256.
        seed: chooses the classes of each split and every image; same seed, same data.
        train_part: "varies" (train classes show every part) or "fixed" (see the module docstring).
    """
    if root is not None:
        raise ValueError(f"synthetic is rendered in memory and reads no files; pass root=None, not {root!r}")
    train_part = _check_train_part(train_part)
    num_classes = _check_int("num_classes", num_classes, 1, MAX_CLASSES_PER_SPLIT[train_part])
    images_per_class = _check_int("images_per_class", images_per_class, 1, 100_000)
    image_size = _check_int("image_size", image_size, 16, 256)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    images, labels, classes = generate(num_classes, images_per_class, image_size, split, seed, train_part)
    return SyntheticDataset(images, labels, classes, split, seed, transform)
