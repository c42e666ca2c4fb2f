"""Runs every bench/bench_*.py, each in its own process (isolated allocator and compile caches).

    python bench/run_all.py [--smoke] [--device cuda] [--only pairwise_distance]
                            [--out-dir DIR [--tag TAG]] [--min-run-time SECONDS]

Full runs write JSON + PNG under bench/results/; --smoke runs tiny sizes into a temporary folder
(CI checks that every benchmark still runs, not how fast). --out-dir DIR writes DIR/<name>.json,
or DIR/<name>-<TAG>.json with --tag (bench/gpu_check.sh names the files after the card).
Exit status 1 names the benchmarks that failed; the others still run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--only", action="append", default=[], help="benchmark name(s) to run")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--tag", default=None, help="suffix of the JSON names in --out-dir (e.g. the card)")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per case")
    args = p.parse_args()
    if args.tag is not None and not args.out_dir:
        p.error("--tag names files in --out-dir; give --out-dir too")
    if args.tag is not None and (not args.tag or "/" in args.tag):
        p.error(f"--tag must be a non-empty file-name part, got {args.tag!r}")
    if args.min_run_time is not None and not args.min_run_time > 0:
        p.error(f"--min-run-time must be positive, got {args.min_run_time}")

    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
        if not scripts:
            p.error(f"no benchmark named {args.only}; have {[s.stem for s in HERE.glob('bench_*.py')]}")
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="diva_bench_")) if args.smoke else None)
    # A fixed mmap threshold returns large buffers to the system when freed, so the CPU peak
    # memory measured in common.py belongs to the call being measured.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.smoke:
            cmd.append("--smoke")
        if args.device:
            cmd += ["--device", args.device]
        if args.min_run_time is not None:
            cmd += ["--min-run-time", str(args.min_run_time)]
        if out_dir:
            name = script.stem.removeprefix("bench_") + (f"-{args.tag}" if args.tag else "")
            cmd += ["--out", str(out_dir / f"{name}.json")]
        start = time.time()
        print(f"== {script.name}", flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(script.name)
        print(f"== {script.name}: {time.time() - start:.1f} s", flush=True)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
