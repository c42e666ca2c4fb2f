"""scripts/sync_tree.py, the mirror the stack CI builds in: only files whose bytes changed are
rewritten (the others keep their mtimes, so ninja recompiles only what changed), files git no
longer lists are removed, and what git ignores in the mirror (build outputs) is left alone."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sync_tree.py"
OLD = 1_000_000_000  # an mtime (2001) no copy made now can have

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def load_sync_tree():
    spec = importlib.util.spec_from_file_location("sync_tree", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = load_sync_tree().sync


def git(src, *args):
    subprocess.run(["git", *args], cwd=src, check=True, capture_output=True)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def src(tmp_path):
    src = tmp_path / "src"
    write(src / ".gitignore", "build/\n*.so\n")
    write(src / "setup.py", "print('setup')\n")
    write(src / "csrc" / "op.cpp", "int op() { return 1; }\n")
    write(src / "csrc" / "other.cpp", "int other() { return 2; }\n")
    write(src / "docs" / "notes.md", "notes\n")
    git(src, "init", "-q")
    git(src, "add", ".")
    write(src / "untracked.py", "x = 1\n")  # untracked, not ignored: mirrored too
    write(src / "build" / "src_only.o", "object")  # ignored in SRC: never mirrored
    return src


def relative_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def age(dest):
    """Sets every file in dest to the OLD mtime, as if built long ago."""
    for p in dest.rglob("*"):
        if p.is_file():
            os.utime(p, (OLD, OLD))


def test_first_sync_copies_listed_files_only(src, tmp_path):
    dest = tmp_path / "dest"
    copied, removed = sync(src, dest)
    expected = [".gitignore", "csrc/op.cpp", "csrc/other.cpp", "docs/notes.md", "setup.py", "untracked.py"]
    assert relative_files(dest) == expected
    assert (copied, removed) == (len(expected), 0)
    for rel in expected:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()


def test_resync_rewrites_only_changed_bytes_and_keeps_other_mtimes(src, tmp_path):
    dest = tmp_path / "dest"
    sync(src, dest)
    age(dest)
    inode = (dest / "csrc" / "other.cpp").stat().st_ino
    # Same size, and SRC's mtime set back to DEST's: only a byte comparison can see this change.
    write(src / "csrc" / "op.cpp", "int op() { return 7; }\n")
    os.utime(src / "csrc" / "op.cpp", (OLD, OLD))
    copied, removed = sync(src, dest)
    assert (copied, removed) == (1, 0)
    assert (dest / "csrc" / "op.cpp").read_text() == "int op() { return 7; }\n"
    assert (dest / "csrc" / "op.cpp").stat().st_mtime > OLD  # newer than anything built from it
    for rel in [".gitignore", "csrc/other.cpp", "docs/notes.md", "setup.py", "untracked.py"]:
        assert (dest / rel).stat().st_mtime == OLD, rel
    assert (dest / "csrc" / "other.cpp").stat().st_ino == inode  # not rewritten at all


def test_deleted_files_are_removed_but_build_outputs_kept(src, tmp_path):
    dest = tmp_path / "dest"
    sync(src, dest)
    write(dest / "build" / "temp" / "op.o", "object")  # the mirror's own build outputs
    write(dest / "diva_ext" / "_C.so", "library")
    (src / "docs" / "notes.md").unlink()  # tracked, deleted from the working tree
    git(src, "rm", "-q", "--cached", "csrc/other.cpp")
    (src / "csrc" / "other.cpp").unlink()
    (src / "untracked.py").unlink()
    copied, removed = sync(src, dest)
    assert (copied, removed) == (0, 3)
    assert relative_files(dest) == [".gitignore", "build/temp/op.o", "csrc/op.cpp", "diva_ext/_C.so", "setup.py"]


def test_symlink_in_dest_is_replaced_not_followed(src, tmp_path):
    dest = tmp_path / "dest"
    sync(src, dest)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the mirror's\n")
    (dest / "setup.py").unlink()
    (dest / "setup.py").symlink_to(outside)
    sync(src, dest)
    assert not (dest / "setup.py").is_symlink()
    assert (dest / "setup.py").read_text() == "print('setup')\n"
    assert outside.read_text() == "not the mirror's\n"


def test_command_line_usage(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode != 0 and "usage:" in result.stderr
