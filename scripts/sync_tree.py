"""Mirrors a git checkout's files into a build folder kept between runs, for incremental builds.

    python scripts/sync_tree.py SRC DEST

CI clones afresh each run, so every file has a new mtime and ninja would recompile everything.
Copying into DEST only the files whose bytes differ leaves unchanged files with their old
mtimes, so a build in DEST recompiles only what really changed. Files git knows of (tracked, or
untracked and not ignored) are mirrored; files DEST has that git no longer lists are removed,
except what git ignores there (build outputs, compiled extensions, caches), which the build owns.
Prints how many files it copied and removed.
"""

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path


def listed_files(src):
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src, check=True, capture_output=True,
    ).stdout
    # A tracked file deleted from the working tree is still listed: keep only what exists.
    return {f for f in out.decode().split("\0") if f and (src / f).is_file()}


def ignored_by_git(src, paths):
    """The subset of paths (relative, from DEST) that SRC's .gitignore rules ignore."""
    if not paths:
        return set()
    out = subprocess.run(
        ["git", "check-ignore", "-z", "--no-index", "--stdin"],
        cwd=src, input="\0".join(paths).encode(), capture_output=True,
    ).stdout
    return {p for p in out.decode().split("\0") if p}


def sync(src, dest):
    src, dest = Path(src).resolve(), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    wanted = listed_files(src)
    copied = 0
    for rel in sorted(wanted):
        s, d = src / rel, dest / rel
        if d.is_file() and not d.is_symlink() and filecmp.cmp(s, d, shallow=False):
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        if d.is_symlink() or d.exists():
            d.unlink()
        shutil.copy2(s, d)
        # A fresh mtime, so that anything built from the old content is older than the new one.
        os.utime(d)
        copied += 1
    present = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    stale = present - wanted
    stale -= ignored_by_git(src, sorted(stale))
    for rel in stale:
        (dest / rel).unlink()
    return copied, len(stale)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: " + __doc__.strip().splitlines()[2].strip())
    copied, removed = sync(sys.argv[1], sys.argv[2])
    print(f"sync_tree: {copied} file(s) copied, {removed} removed")


if __name__ == "__main__":
    main()
