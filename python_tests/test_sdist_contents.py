"""The source distribution holds what a build from it needs (MANIFEST.in).

pip builds an sdist (and `pip install git+URL` a clone) with setup.py, which imports helpers from
scripts/ and compiles csrc/. The sdist is made from a copy of the checkout's files with the
extensions left out of setup.py (DIVA_METADATA_ONLY=1), so that only MANIFEST.in can bring the
C++ sources in, then compared with what the build reads.
"""

import ast
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def checkout_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


def scripts_imported_by_setup():
    """The modules of scripts/ that setup.py imports (it puts scripts/ on sys.path)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return sorted(f"scripts/{n}.py" for n in names if (ROOT / "scripts" / f"{n}.py").is_file())


def test_sdist_has_sources_headers_and_build_helpers(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (its file list); this tree is a copy without .git")
    src = tmp_path / "src"
    for rel in checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    env = dict(os.environ, DIVA_METADATA_ONLY="1")
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (archive,) = (tmp_path / "dist").glob("diva_ext-*.tar.gz")
    with tarfile.open(archive) as tar:
        top = archive.name[: -len(".tar.gz")]
        names = {n[len(top) + 1:] for n in tar.getnames() if n.startswith(top + "/")}

    needed = [f for f in checkout_files()
              if f.startswith("csrc/") or (f.startswith("diva_ext/") and f.endswith(".py"))]
    needed += ["setup.py", "pyproject.toml", "README.md", "MANIFEST.in"] + scripts_imported_by_setup()
    assert "scripts/build_env.py" in needed and "csrc/sources.txt" in needed
    missing = sorted(set(needed) - names)
    assert not missing, f"{archive.name} lacks {missing}"
    assert not [n for n in names if n.endswith((".so", ".o"))], "compiled files in the sdist"
