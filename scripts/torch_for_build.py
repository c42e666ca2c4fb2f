"""Refuses a build whose torch is not the one that will import the extension (run by setup.py).

A C++ extension of torch loads only into the torch it was compiled against. Two ways a build gets
another one, each stopped here with a message saying what to run instead:
  - build isolation: pip (and `python -m build`, uv) compile in a throwaway environment holding a
    torch downloaded from pyproject.toml's build requirements, whatever torch the user runs;
  - a torch outside the supported range: pip would replace it after the build, and the binary
    would then not load.
"""

import os
import sys
import tomllib
from pathlib import Path

ISOLATION_OVERRIDE = "DIVA_ALLOW_BUILD_ISOLATION"

# Folders in which build frontends create their throwaway environments: pip's
# "pip-build-env-XXXX" (both its sys.path overlay and its venv mode), build's "build-env-XXXX",
# uv's "<cache>/builds-v0/.tmpXXXX". A torch inside one of them was installed for this build only.
_ISOLATED_PREFIXES = ("pip-build-env-", "build-env-")
_ISOLATED_PARENTS = ("builds-v0",)

INSTALL_HINT = (
    "Install torch first (any release in {spec}; the CUDA build for CUDA kernels), then build "
    "diva_ext against it without isolation:\n"
    "    pip install setuptools ninja\n"
    "    pip install --no-build-isolation .            # or git+URL, or a wheel: pip wheel --no-build-isolation --no-deps ."
)


class TorchBuildError(SystemExit):
    """Ends setup.py with a message (SystemExit prints it without a traceback)."""

    def __init__(self, message):
        super().__init__(f"diva_ext build: {message}")


def _packaging():
    """packaging's (requirements, version) modules: setuptools >= 71 puts its vendored copy on
    sys.path; older ones keep it in setuptools.extern (e.g. the setuptools 65 of a Python 3.11 venv)."""
    try:
        from packaging import requirements, version
    except ImportError:
        from setuptools.extern.packaging import requirements, version
    return requirements, version


def supported_torch(root):
    """The specifier of torch in pyproject.toml's [project] dependencies (e.g. <2.16,>=2.11)."""
    Requirement = _packaging()[0].Requirement
    dependencies = tomllib.loads((Path(root) / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_requirement,) = [r for r in map(Requirement, dependencies) if r.name == "torch"]
    return torch_requirement.specifier


def isolated_environment(path):
    """The throwaway build environment folder that holds `path`, or None."""
    for parent in Path(path).resolve().parents:
        if parent.name.startswith(_ISOLATED_PREFIXES) or parent.parent.name in _ISOLATED_PARENTS:
            return parent
    return None


def check(root):
    """Imports torch and checks it is one this build may compile against; returns the module."""
    spec = supported_torch(root)
    try:
        import torch
    except ImportError as err:
        raise TorchBuildError(f"torch cannot be imported ({err}).\n" + INSTALL_HINT.format(spec=spec)) from None

    throwaway = isolated_environment(torch.__file__)
    if throwaway is not None and os.environ.get(ISOLATION_OVERRIDE) != "1":
        raise TorchBuildError(
            f"this is an isolated build: torch {torch.__version__} was installed into {throwaway} "
            "for the build alone, and the extension compiled against it would only load under that "
            "exact torch, not necessarily yours.\n" + INSTALL_HINT.format(spec=spec) +
            f"\n({ISOLATION_OVERRIDE}=1 builds in isolation anyway, for a wheel meant for torch "
            f"{torch.__version__} exactly.)"
        )

    if _packaging()[1].Version(torch.__version__).base_version not in spec:
        raise TorchBuildError(
            f"torch {torch.__version__} ({torch.__file__}) is outside the supported range {spec}: "
            "pip would replace it after the build and the extension would not load. "
            f"Install a torch in {spec} first (python {sys.version.split()[0]})."
        )
    return torch
