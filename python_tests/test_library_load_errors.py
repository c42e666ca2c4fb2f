"""diva_ext._library: a compiled library that fails to load is an ImportError saying how to
rebuild, and naming the running torch when the failure is a build for another torch release."""

import importlib

import pytest
import torch

from diva_ext import _library


def failing_import(message):
    def import_module(name, *args):
        if name == "diva_ext._C":
            raise ImportError(message)
        return importlib.import_module(name, *args)
    return import_module


def test_build_for_another_torch_names_the_running_one(monkeypatch):
    monkeypatch.setattr(_library.importlib, "import_module",
                        failing_import("_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev"))
    with pytest.raises(ImportError) as failed:
        _library.load_library()
    message = str(failed.value)
    assert f"another torch than this one ({torch.__version__})" in message
    assert "--no-build-isolation --force-reinstall" in message and "undefined symbol" in message


def test_missing_library_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_library.importlib, "import_module", failing_import("No module named 'diva_ext._C'"))
    with pytest.raises(ImportError) as failed:
        _library.load_library()
    message = str(failed.value)
    assert "make setup" in message and "No module named 'diva_ext._C'" in message
    assert "another torch" not in message
