"""Vectorised rendering of the synthetic dataset's scenes (numpy, whole batches, no pixel loops).

Coordinates: the image spans [-1, 1]^2. A shape lives in its own "object" coordinates (u, v),
where its outline has radius about 1; a scene places it by centre, rotation and scale. Edges are
anti-aliased by rendering at SUPERSAMPLE x the size and average-pooling.

NB: numpy rather than torch on purpose: its elementwise kernels are single-threaded, so rendering
does not stall on OpenMP thread wake-ups when the CPU is oversubscribed (seen with torch: 0.04 s
with 1 thread vs 2.8 s with 2 threads for a tiny split on a busy 2-core machine).
"""

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "plus", "ring", "semicircle", "ellipse")
TEXTURES = ("solid", "stripes", "checker", "dots")
PARTS = ("none", "dot", "bar")
SUPERSAMPLE = 2
# Pattern cells per object unit, and how dark the pattern's second colour is.
_PATTERN_FREQUENCY = 1.6
_PATTERN_SHADE = 0.35
# Where the part sits in object coordinates: above the shape, so it turns with it.
_PART_OFFSET = 1.35
_PART_COLOUR = (0.95, 0.95, 0.95)


def _inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool mask: inside shape ``name`` at object coordinates (u, v) (arrays of any one shape)."""
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if name == "plus":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 1.0))
    if name == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1.0
    r = np.hypot(u, v)
    if name == "circle":
        return r <= 1.0
    if name == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if name == "semicircle":
        return (r <= 1.0) & (v >= -0.1)
    theta = np.arctan2(v, u)
    if name == "triangle":
        # Regular polygon: distance to the nearest edge's supporting line.
        sector = 2 * math.pi / 3
        return r * np.cos(np.mod(theta, sector) - sector / 2) <= 0.6
    if name == "star":
        return r <= 0.6 + 0.4 * np.cos(5 * theta)
    raise ValueError(f"unknown shape {name!r}")


def shape_mask(kind: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool [N, H, W]: inside shape ``SHAPES[kind[n]]`` at object coordinates (u, v) [N, H, W]."""
    inside = np.zeros(u.shape, dtype=bool)
    for index, name in enumerate(SHAPES):
        rows = np.flatnonzero(kind == index)
        if rows.size:
            inside[rows] = _inside(name, u[rows], v[rows])
    return inside


def texture_mask(kind: np.ndarray, u: np.ndarray, v: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """bool [N, H, W]: where texture ``TEXTURES[kind[n]]`` shows its second colour; ``phase`` [N, 2]
    shifts the pattern within the object (nuisance)."""
    pattern = np.zeros(u.shape, dtype=bool)
    for index, name in enumerate(TEXTURES):
        rows = np.flatnonzero(kind == index)
        if name == "solid" or not rows.size:
            continue
        a = u[rows] * _PATTERN_FREQUENCY + phase[rows, 0, None, None]
        b = v[rows] * _PATTERN_FREQUENCY + phase[rows, 1, None, None]
        if name == "stripes":
            pattern[rows] = np.mod(np.floor(a), 2) == 1
        elif name == "checker":
            pattern[rows] = np.mod(np.floor(a) + np.floor(b), 2) == 1
        else:  # dots
            pattern[rows] = (a - np.floor(a) - 0.5) ** 2 + (b - np.floor(b) - 0.5) ** 2 <= 0.3**2
    return pattern


def part_mask(kind: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool [N, H, W]: the attached part ``PARTS[kind[n]]`` (none, a small disc, a short bar)."""
    dv = v - _PART_OFFSET
    dot = u**2 + dv**2 <= 0.3**2
    bar = (np.abs(u) <= 0.55) & (np.abs(dv) <= 0.16)
    return ((kind == 1)[:, None, None] & dot) | ((kind == 2)[:, None, None] & bar)


def object_coords(x, y, centre, angle, scale):
    """Image coordinates x, y [H, W] -> object coordinates (u, v) [N, H, W] of N placed objects.

    centre [N, 2], angle [N] (radians), scale [N] (object radius in image units).
    """
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    k = scale[:, None, None]
    return (c * dx + s * dy) / k, (-s * dx + c * dy) / k


@dataclass
class Scenes:
    """Everything that varies between N images (float32 unless said otherwise).

    Class factors: shape, texture, part (int64 [N]) and colour ([N, 3] RGB, already jittered).
    Nuisance: centre [N, 2], angle [N], scale [N], phase [N, 2]; background [N, 3] base colour and
    background_slope [N, 2]; distractor_* [N, M, ...] for M clutter shapes, distractor_on bool
    [N, M]; brightness [N] and light_slope [N, 2]; noise [N, 3, S, S] added at the output size S.
    """

    shape: np.ndarray
    texture: np.ndarray
    part: np.ndarray
    colour: np.ndarray
    centre: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    phase: np.ndarray
    background: np.ndarray
    background_slope: np.ndarray
    distractor_on: np.ndarray
    distractor_shape: np.ndarray
    distractor_colour: np.ndarray
    distractor_centre: np.ndarray
    distractor_angle: np.ndarray
    distractor_scale: np.ndarray
    brightness: np.ndarray
    light_slope: np.ndarray
    noise: np.ndarray


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """image [N, 3, H, W] with colour [N, 3] where mask [N, H, W]."""
    return np.where(mask[:, None], colour[:, :, None, None], image)


def render(scenes: Scenes, size: int) -> np.ndarray:
    """Draw the scenes: uint8 [N, 3, size, size].

    Back to front: background with a colour gradient, clutter shapes, the object (shape filled
    with its colour and texture), its part; then lighting (brightness and a gradient) and noise.
    """
    big = size * SUPERSAMPLE
    axis = ((np.arange(big, dtype=np.float32) + 0.5) / big * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    n = scenes.shape.shape[0]

    slope = scenes.background_slope
    image = scenes.background[:, :, None, None] + (slope[:, 0, None, None] * x + slope[:, 1, None, None] * y)[:, None]
    image = np.broadcast_to(image, (n, 3, big, big)).copy()
    for m in range(scenes.distractor_on.shape[1]):
        on = np.flatnonzero(scenes.distractor_on[:, m])
        u, v = object_coords(x, y, scenes.distractor_centre[on, m], scenes.distractor_angle[on, m],
                             scenes.distractor_scale[on, m])
        image[on] = _paint(image[on], shape_mask(scenes.distractor_shape[on, m], u, v), scenes.distractor_colour[on, m])

    u, v = object_coords(x, y, scenes.centre, scenes.angle, scenes.scale)
    body = shape_mask(scenes.shape, u, v)
    image = _paint(image, body, scenes.colour)
    image = _paint(image, body & texture_mask(scenes.texture, u, v, scenes.phase), scenes.colour * _PATTERN_SHADE)
    part_colour = np.broadcast_to(np.asarray(_PART_COLOUR, dtype=np.float32), (n, 3))
    image = _paint(image, part_mask(scenes.part, u, v), part_colour)

    # Box-filter down: the mean of each SUPERSAMPLE x SUPERSAMPLE block, as strided slices.
    image = sum(image[:, :, i::SUPERSAMPLE, j::SUPERSAMPLE] for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE))
    image = image / SUPERSAMPLE**2
    small = axis.reshape(size, SUPERSAMPLE).mean(axis=1)
    ys, xs = np.meshgrid(small, small, indexing="ij")
    light = scenes.brightness[:, None, None] * (
        1 + scenes.light_slope[:, 0, None, None] * xs + scenes.light_slope[:, 1, None, None] * ys
    )
    image = image * light[:, None] + scenes.noise
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
