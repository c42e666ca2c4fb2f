"""Transforms: the paper's ResNet pipelines, small-image variants, two independent views."""

import pytest
import torch
from PIL import Image

from diva_ext.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoViews,
    make_transforms,
    resnet_test_transform,
    resnet_train_transform,
    small_test_transform,
    small_train_transform,
)


def _textured(width, height):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("to_pil", [False, True])
def test_resnet_shapes_from_odd_sizes(to_pil):
    image = _textured(301, 217)
    if to_pil:
        image = Image.fromarray(image.permute(1, 2, 0).numpy())
    for transform in (resnet_train_transform(), resnet_test_transform()):
        out = transform(image)
        assert type(out) is torch.Tensor and out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_normalisation_uses_imagenet_statistics():
    grey = torch.full((3, 40, 50), 128, dtype=torch.uint8)
    out = small_test_transform(32)(grey)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 5, 7], expected)


def _box(width, height, top, bottom, left, right):
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, top:bottom, left:right] = 255
    return image


def test_resnet_test_transform_resizes_then_centre_crops():
    # 300 x 260 -> Resize(256): 295 x 256 (scale 0.985) -> CenterCrop(224) keeps input rows ~16-244
    # and columns ~37-264. A white box around that region fills the output; a white box well
    # inside it leaves black corners.
    transform = resnet_test_transform()
    white = (255 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    filled = transform(_box(300, 260, 10, 250, 30, 270))
    torch.testing.assert_close(filled, white[:, None, None].expand(3, 224, 224))
    inner = transform(_box(300, 260, 40, 220, 60, 240))
    torch.testing.assert_close(inner[:, 0, 0], black)
    torch.testing.assert_close(inner[:, 112, 112], white)
    torch.testing.assert_close(transform(_box(300, 260, 40, 220, 60, 240)), inner)  # deterministic


def test_train_transforms_are_random():
    image = _textured(32, 32)
    torch.manual_seed(0)
    outs = [small_train_transform(32)(image) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_two_views_are_independent():
    torch.manual_seed(1)
    first, second = TwoViews(small_train_transform(32))(_textured(32, 32))
    assert first.shape == second.shape == (3, 32, 32) and not torch.equal(first, second)
    a, b = TwoViews(lambda x: x + 1, lambda x: x * 10)(torch.tensor(2))
    assert (a.item(), b.item()) == (3, 20)


@pytest.mark.parametrize("kind, size, expected", [("resnet", None, 224), ("small", None, 32), ("small", 48, 48),
                                                  ("resnet", 112, 112)])
def test_make_transforms(kind, size, expected):
    train, test = make_transforms(kind, size)
    image = _textured(130, 120)
    assert train(image).shape == test(image).shape == (3, expected, expected)


def test_make_transforms_errors():
    with pytest.raises(ValueError, match="unknown transform kind 'big'; choose one of resnet, small"):
        make_transforms("big")
    with pytest.raises(ValueError, match="size must be a positive int"):
        make_transforms("small", 0)
