"""The self-similarity task's views and queue as in the paper's code: independent RandomResizedCrop
views at scale (0.08, 1) plus flip for the key encoder, and a queue filled with keys of the query
view of batches training does not start with."""

import math

import torch

from diva_ext.data.sampler import ClassBalancedBatchSampler
from diva_ext.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, TwoViews, make_transforms,
                                      selfsimilarity_view_transform)
from diva_ext.training.trainer import FILL_EPOCH, DiVATrainer, load_datasets
from test_trainer import SYNTHETIC, tiny_config

SIDE = 128  # source image: channel 0 holds 2x, channel 1 holds 2y (0..254), so a view shows its crop


def coordinate_image():
    ramp = torch.arange(SIDE, dtype=torch.int64) * 2
    image = torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)
    image[0] = ramp[None, :].to(torch.uint8)
    image[1] = ramp[:, None].to(torch.uint8)
    return image


def crop_of(view):
    """(area fraction, flipped) of the source region a view shows, read off its coordinate channels."""
    pixels = [view[c] * IMAGENET_STD[c] + IMAGENET_MEAN[c] for c in (0, 1)]  # back to [0, 1]
    x, y = (p * 255 / 2 for p in pixels)  # source pixel coordinates
    width = float(x.max() - x.min()) + 1
    height = float(y.max() - y.min()) + 1
    flipped = float(x[:, 0].mean()) > float(x[:, -1].mean())
    return width * height / SIDE**2, flipped


def test_views_cover_the_papers_crop_scales_and_flip_independently(generator):
    torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
    size = 24 + int(torch.randint(17, (), generator=generator))  # sized for the image: any side
    views = TwoViews(selfsimilarity_view_transform(size))
    image = coordinate_image()
    firsts, seconds = [], []
    for _ in range(300):
        a, b = views(image)
        assert a.shape == b.shape == (3, size, size)
        firsts.append(crop_of(a))
        seconds.append(crop_of(b))
    areas = torch.tensor([c[0] for c in firsts + seconds])
    # Scale (0.08, 1): never below 8% of the image, often far below the old 0.8. The crop's sides
    # sqrt(0.08 r) S and sqrt(0.08 / r) S (ratio r in [3/4, 4/3]) are rounded to whole pixels
    # (-1/2), read back through uint8 coordinates (-1/2 in all) and from output pixel centres, half
    # an output pixel inside each edge (a factor 1 - 1/size).
    side = math.sqrt(0.08) * SIDE
    worst = min((side * math.sqrt(r) - 1) * (side / math.sqrt(r) - 1) for r in (3 / 4, 1, 4 / 3))
    assert areas.min() >= worst * (1 - 1 / size) ** 2 / SIDE**2
    assert (areas < 0.3).float().mean() > 0.2
    assert areas.max() > 0.8
    flips = torch.tensor([c[1] for c in firsts + seconds], dtype=torch.float64)
    assert 0.35 < flips.mean() < 0.65
    # Independent draws: the two views' crops are uncorrelated (|r| < 0.2; sd of r is ~0.06 here).
    a, b = torch.tensor([c[0] for c in firsts]), torch.tensor([c[0] for c in seconds])
    r = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(float(r)) < 0.2
    assert (a != b).float().mean() > 0.9


def test_the_small_transform_alone_keeps_its_mild_crops():
    train, _ = make_transforms("small", 32)
    areas = [crop_of(train(coordinate_image()))[0] for _ in range(100)]
    assert min(areas) > 0.7  # scale 0.8-1 (the query view every head sees, baseline included)


def test_only_the_key_view_gets_the_papers_augmentation():
    diva_train, _ = load_datasets(tiny_config(), SYNTHETIC)
    baseline_train, _ = load_datasets(tiny_config(tasks=("discriminative",)), SYNTHETIC)
    views = diva_train.transform
    assert isinstance(views, TwoViews)
    assert repr(views.first) == repr(baseline_train.transform)
    assert repr(views.second) == repr(selfsimilarity_view_transform(16))


def test_the_queue_is_filled_from_the_query_view_of_fresh_batches(tmp_path):
    # No validation classes: the sampler's indices are then the synthetic set's (its .images, its transform).
    config = tiny_config(queue_batches=3, val_fraction=0.0)
    trainer = DiVATrainer(config, tmp_path, progress=False, log=lambda line: None, dataset_options=SYNTHETIC)
    _, plain = make_transforms(config.transform, config.image_size)
    # Deterministic views (the key view mirrored) so that the enqueued images can be recognised.
    trainer.train_set.transform = TwoViews(plain, lambda image: plain(image).flip(-1))
    enqueued = []
    trainer.contrastive.enqueue = lambda images: enqueued.append(images.clone())
    trainer.fill_queue()
    sampler = ClassBalancedBatchSampler(trainer.train_set.labels, config.batch_size, config.samples_per_class,
                                        num_batches=config.batches_per_epoch, generator=config.seed)
    sampler.set_epoch(FILL_EPOCH)
    expected = [b for _, b in zip(range(config.queue_batches), _cycle(sampler))]
    sampler.set_epoch(0)
    first_epoch = list(sampler)
    assert len(enqueued) == config.queue_batches
    for images, indices in zip(enqueued, expected):
        want = torch.stack([plain(trainer.train_set.images[i]) for i in indices])
        assert torch.equal(images, want)  # the query view, not the mirrored key view
    assert expected[: len(first_epoch)] != first_epoch  # not the batches training starts with


def _cycle(sampler):
    while True:
        yield from sampler
