"""Vectorised rendering of the synthetic dataset's scenes (torch, whole batches, no pixel loops).

Coordinates: the image spans [-1, 1]^2. A shape lives in its own "object" coordinates (u, v),
where its outline has radius about 1; a scene places it by centre, rotation and scale. Edges are
anti-aliased by rendering at SUPERSAMPLE x the size and average-pooling.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


def shape_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: inside shape ``SHAPES[kind[n]]`` at object coordinates (u, v) [N, H, W]."""
    r = torch.hypot(u, v)
    theta = torch.atan2(v, u)
    inside = torch.zeros_like(u, dtype=torch.bool)
    for index, name in enumerate(SHAPES):
        rows = kind == index
        if not rows.any():
            continue
        uu, vv, rr, tt = u[rows], v[rows], r[rows], theta[rows]
        if name == "circle":
            m = rr <= 1.0
        elif name == "square":
            m = torch.maximum(uu.abs(), vv.abs()) <= 0.85
        elif name == "triangle":
            # Regular polygon: distance to the nearest edge's supporting line.
            sector = 2 * math.pi / 3
            m = rr * torch.cos(torch.remainder(tt, sector) - sector / 2) <= 0.6
        elif name == "star":
            m = rr <= 0.6 + 0.4 * torch.cos(5 * tt)
        elif name == "plus":
            m = ((uu.abs() <= 0.32) & (vv.abs() <= 1.0)) | ((vv.abs() <= 0.32) & (uu.abs() <= 1.0))
        elif name == "ring":
            m = (rr <= 1.0) & (rr >= 0.55)
        elif name == "semicircle":
            m = (rr <= 1.0) & (vv >= -0.1)
        else:  # ellipse
            m = uu**2 + (vv / 0.55) ** 2 <= 1.0
        inside[rows] = m
    return inside


def texture_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: where texture ``TEXTURES[kind[n]]`` shows its second colour; ``phase`` [N, 2]
    shifts the pattern within the object (nuisance)."""
    a = u * _PATTERN_FREQUENCY + phase[:, 0, None, None]
    b = v * _PATTERN_FREQUENCY + phase[:, 1, None, None]
    stripes = torch.remainder(torch.floor(a), 2) == 1
    checker = torch.remainder(torch.floor(a) + torch.floor(b), 2) == 1
    dots = (a - torch.floor(a) - 0.5) ** 2 + (b - torch.floor(b) - 0.5) ** 2 <= 0.3**2
    solid = torch.zeros_like(stripes)
    options = torch.stack([solid, stripes, checker, dots])  # [4, N, H, W], order of TEXTURES
    return options.gather(0, kind[None, :, None, None].expand(1, *u.shape))[0]


def part_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: the attached part ``PARTS[kind[n]]`` (none, a small disc, a short bar)."""
    dv = v - _PART_OFFSET
    dot = u**2 + dv**2 <= 0.3**2
    bar = (u.abs() <= 0.55) & (dv.abs() <= 0.16)
    return ((kind == 1)[:, None, None] & dot) | ((kind == 2)[:, None, None] & bar)


def object_coords(x, y, centre, angle, scale):
    """Image coordinates x, y [H, W] -> object coordinates (u, v) [N, H, W] of N placed objects.

    centre [N, 2], angle [N] (radians), scale [N] (object radius in image units).
    """
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
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

    shape: torch.Tensor
    texture: torch.Tensor
    part: torch.Tensor
    colour: torch.Tensor
    centre: torch.Tensor
    angle: torch.Tensor
    scale: torch.Tensor
    phase: torch.Tensor
    background: torch.Tensor
    background_slope: torch.Tensor
    distractor_on: torch.Tensor
    distractor_shape: torch.Tensor
    distractor_colour: torch.Tensor
    distractor_centre: torch.Tensor
    distractor_angle: torch.Tensor
    distractor_scale: torch.Tensor
    brightness: torch.Tensor
    light_slope: torch.Tensor
    noise: torch.Tensor


def _paint(image: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """image [N, 3, H, W] with colour [N, 3] where mask [N, H, W]."""
    return torch.where(mask[:, None], colour[:, :, None, None], image)


def render(scenes: Scenes, size: int) -> torch.Tensor:
    """Draw the scenes: uint8 [N, 3, size, size].

    Back to front: background with a colour gradient, clutter shapes, the object (shape filled
    with its colour and texture), its part; then lighting (brightness and a gradient) and noise.
    """
    big = size * SUPERSAMPLE
    axis = (torch.arange(big, dtype=torch.float32) + 0.5) / big * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    n = scenes.shape.shape[0]

    slope = scenes.background_slope
    image = scenes.background[:, :, None, None] + (slope[:, 0, None, None] * x + slope[:, 1, None, None] * y)[:, None]
    image = image.expand(n, 3, big, big).clone()
    for m in range(scenes.distractor_on.shape[1]):
        u, v = object_coords(x, y, scenes.distractor_centre[:, m], scenes.distractor_angle[:, m],
                             scenes.distractor_scale[:, m])
        mask = shape_mask(scenes.distractor_shape[:, m], u, v) & scenes.distractor_on[:, m, None, None]
        image = _paint(image, mask, scenes.distractor_colour[:, m])

    u, v = object_coords(x, y, scenes.centre, scenes.angle, scenes.scale)
    body = shape_mask(scenes.shape, u, v)
    image = _paint(image, body, scenes.colour)
    image = _paint(image, body & texture_mask(scenes.texture, u, v, scenes.phase), scenes.colour * _PATTERN_SHADE)
    part_colour = torch.tensor(_PART_COLOUR).expand(n, 3)
    image = _paint(image, part_mask(scenes.part, u, v), part_colour)

    image = F.avg_pool2d(image, SUPERSAMPLE)
    small = axis.reshape(size, SUPERSAMPLE).mean(dim=1)
    ys, xs = torch.meshgrid(small, small, indexing="ij")
    light = scenes.brightness[:, None, None] * (
        1 + scenes.light_slope[:, 0, None, None] * xs + scenes.light_slope[:, 1, None, None] * ys
    )
    image = image * light[:, None] + scenes.noise
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
