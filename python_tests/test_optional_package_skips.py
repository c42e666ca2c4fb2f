"""conftest's optional-package skips: a test module that cannot import faiss or
pytorch-metric-learning is skipped with a reason naming the package and how to install it; any
other import error still fails collection. The packages are hidden (None in sys.modules), so
these tests run whether or not the packages are installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import diva_ext
from conftest import OPTIONAL_PACKAGES, missing_optional_package

CONFTEST = Path(__file__).with_name("conftest.py")


def import_error(monkeypatch, module):
    """The ModuleNotFoundError `import module` raises once its top-level package is hidden."""
    monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    with pytest.raises(ModuleNotFoundError) as caught:
        __import__(module)
    return caught.value


@pytest.mark.parametrize("module", ["faiss", "pytorch_metric_learning.losses"])
def test_hidden_optional_package_is_named(monkeypatch, module):
    assert missing_optional_package(import_error(monkeypatch, module)) == module.split(".")[0]


def test_other_missing_module_is_not_an_optional_package(monkeypatch):
    assert missing_optional_package(import_error(monkeypatch, "diva_ext_no_such_module")) is None
    # Not a missing module at all: an ImportError of another kind (a broken build, say).
    assert missing_optional_package(ImportError("undefined symbol", name="faiss")) is None


def test_installed_package_is_not_reported_missing(monkeypatch):
    # A submodule missing inside an installed package is a real error, not an absent package.
    monkeypatch.setitem(sys.modules, "diva_ext.no_such_submodule", None)
    with pytest.raises(ModuleNotFoundError) as caught:
        import diva_ext.no_such_submodule  # noqa: F401
    assert missing_optional_package(caught.value) is None


def run_pytest(tmp_path, test_source):
    """Collects one test module under the project's conftest with faiss and PML hidden."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util, sys
        for name in {sorted(OPTIONAL_PACKAGES)!r}:
            sys.modules[name] = None
        spec = importlib.util.spec_from_file_location("diva_conftest", {str(CONFTEST)!r})
        diva_conftest = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(diva_conftest)
        pytest_pycollect_makemodule = diva_conftest.pytest_pycollect_makemodule
    """))
    (tmp_path / "test_module.py").write_text(textwrap.dedent(test_source))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of the project's settings
    root = Path(diva_ext.__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
         str(tmp_path / "test_module.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


@pytest.mark.parametrize("package", sorted(OPTIONAL_PACKAGES))
def test_module_needing_a_missing_package_is_skipped_naming_it(tmp_path, package):
    result = run_pytest(tmp_path, f"""
        import {package}

        def test_uses_it():
            assert False, "must not run: its module's import failed"
    """)
    out = result.stdout + result.stderr
    # A module-level skip collects no test: pytest's exit status is then 5, not 0.
    assert result.returncode in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), out
    summary = out.strip().splitlines()[-1]
    assert "1 skipped" in summary and "failed" not in summary and "error" not in summary, out
    assert f"test_module.py needs {package} (pip install {OPTIONAL_PACKAGES[package]}), not installed" in out, out


def test_module_with_another_import_error_fails_collection(tmp_path):
    result = run_pytest(tmp_path, """
        import diva_ext_no_such_module

        def test_never_collected():
            pass
    """)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "diva_ext_no_such_module" in out and "skipped" not in out, out
