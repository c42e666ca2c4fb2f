"""Unreadable images: an error naming the path, or with skip_corrupt a warning and a skip."""

import pytest
from PIL import Image

from diva_ext.data import UnreadableImageError, load


def _tree(root):
    """folder layout: train/a has a good and a garbage 'jpg', train/b only a truncated PNG."""
    for relative in ("train/a/good.jpg", "test/c/good.jpg", "test/c/good2.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(root / relative)
    (root / "train/a/garbage.jpg").write_bytes(b"\x00 this is no image \xff" * 10)
    (root / "train/b").mkdir()
    big = root / "test/c/good2.png"
    (root / "train/b/truncated.png").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    return root


def test_default_loads_fast_and_fails_on_read_naming_the_path(tmp_path):
    ds = load("folder", _tree(tmp_path), "train")
    assert len(ds) == 3
    bad = ds.paths.index(str(tmp_path / "train/a/garbage.jpg"))
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*train/a/garbage.jpg"):
        ds[bad]
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*train/b/truncated.png"):
        ds[ds.paths.index(str(tmp_path / "train/b/truncated.png"))]


def test_verify_lists_every_unreadable_image(tmp_path):
    with pytest.raises(UnreadableImageError, match=r"2 unreadable images .*garbage.jpg.*truncated.png"):
        load("folder", _tree(tmp_path), "train", verify=True)
    assert len(load("folder", tmp_path, "test", verify=True)) == 2


def test_skip_corrupt_warns_and_relabels(tmp_path):
    with pytest.warns(UserWarning, match=r"skipping 2 unreadable images: .*garbage.jpg .*truncated.png"):
        ds = load("folder", _tree(tmp_path), "train", skip_corrupt=True)
    # Class b lost its only image: it disappears and the labels stay contiguous.
    assert ds.paths == [str(tmp_path / "train/a/good.jpg")]
    assert ds.labels.tolist() == [0] and ds.class_names == ["a"] and ds.num_classes == 1
    assert ds[0][0].shape == (3, 16, 16)


def test_file_vanishing_after_load(tmp_path):
    ds = load("folder", _tree(tmp_path), "test")
    (tmp_path / "test/c/good.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image file .*test/c/good.jpg does not exist"):
        ds[0]
