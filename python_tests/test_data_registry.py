"""load(): names from a registry, split and option checks, root validation."""

import pytest

from diva_ext.data import available, load, register


def test_available_names():
    assert available() == ["cars196", "cub200", "folder", "sop", "synthetic"]


@pytest.mark.parametrize("name", ["cub", "CUB200", "synthetic2", "sop_", ""])
def test_no_substring_or_case_matching(name):
    with pytest.raises(ValueError, match=f"unknown dataset {name!r}; choose one of cars196, cub200"):
        load(name)


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load("synthetic", split="val")


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"dataset 'synthetic' has no option\(s\) colour; it accepts num_classes"):
        load("synthetic", colour="red")
    with pytest.raises(TypeError, match=r"dataset 'cub200' has no option\(s\) num_classes"):
        load("cub200", "/nowhere", num_classes=3)


@pytest.mark.parametrize("name", ["folder", "cub200", "cars196", "sop"])
def test_roots_are_validated(name, tmp_path):
    with pytest.raises(ValueError, match=f"dataset {name!r} needs root="):
        load(name)
    with pytest.raises(FileNotFoundError, match=f"{name} root {tmp_path / 'nope'} does not exist"):
        load(name, tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        load(name, tmp_path / "file")


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register("synthetic")(lambda root, split, transform: None)
