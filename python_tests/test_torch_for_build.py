"""scripts/torch_for_build.py: setup.py refuses an isolated build and a torch outside the supported
range, with a message saying what to run; the torch of a plain environment passes.

The torch that check() sees is replaced in sys.modules by a stand-in with a chosen version and
location, so each case runs without building anything.
"""

import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import torch_for_build  # noqa: E402


def stand_in_torch(monkeypatch, version, file):
    fake = types.ModuleType("torch")
    fake.__version__, fake.__file__ = version, str(file)
    monkeypatch.setitem(sys.modules, "torch", fake)
    return fake


def test_supported_range_is_the_dependency_in_pyproject():
    spec = torch_for_build.supported_torch(ROOT)
    assert "2.11.0" in spec and "2.15.9" in spec and "2.10.2" not in spec and "2.16.0" not in spec
    assert torch.__version__.split("+")[0] in spec, "the torch these tests run under is supported"


@pytest.mark.parametrize("where", [
    "tmp/pip-build-env-a1b2c3/overlay/lib/python3.11/site-packages/torch/__init__.py",  # pip, sys.path overlay
    "tmp/pip-build-env-a1b2c3/lib/python3.12/site-packages/torch/__init__.py",  # pip, venv mode
    "tmp/build-env-x9y8/lib/python3.11/site-packages/torch/__init__.py",  # python -m build
    "home/u/.cache/uv/builds-v0/.tmpQ1w2/lib/python3.11/site-packages/torch/__init__.py",  # uv
])
def test_isolated_build_is_refused_with_the_command_to_run(monkeypatch, tmp_path, where):
    stand_in_torch(monkeypatch, "2.14.1+cu130", tmp_path / where)
    monkeypatch.delenv(torch_for_build.ISOLATION_OVERRIDE, raising=False)
    with pytest.raises(SystemExit) as refused:
        torch_for_build.check(ROOT)
    message = str(refused.value)
    assert "isolated build" in message and "--no-build-isolation" in message and "2.14.1+cu130" in message
    # The override lets a deliberate isolated build through.
    monkeypatch.setenv(torch_for_build.ISOLATION_OVERRIDE, "1")
    assert torch_for_build.check(ROOT) is sys.modules["torch"]


def test_plain_environment_passes(monkeypatch, tmp_path):
    monkeypatch.delenv(torch_for_build.ISOLATION_OVERRIDE, raising=False)
    fake = stand_in_torch(monkeypatch, "2.11.0", tmp_path / "venv/lib/python3.12/site-packages/torch/__init__.py")
    assert torch_for_build.check(ROOT) is fake
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert torch_for_build.check(ROOT) is torch  # the real one of this environment


@pytest.mark.parametrize("version", ["2.10.2", "2.16.0", "2.16.0a0+git123", "1.13.1"])
def test_torch_outside_the_range_is_refused(monkeypatch, tmp_path, version):
    stand_in_torch(monkeypatch, version, tmp_path / "venv/lib/python3.11/site-packages/torch/__init__.py")
    with pytest.raises(SystemExit) as refused:
        torch_for_build.check(ROOT)
    assert f"torch {version}" in str(refused.value) and "outside the supported range" in str(refused.value)


def test_missing_torch_says_to_install_it_first(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(SystemExit) as refused:
        torch_for_build.check(ROOT)
    assert "torch cannot be imported" in str(refused.value) and "Install torch first" in str(refused.value)
