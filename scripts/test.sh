#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: the libtorch C++ consumer under ctest, a smoke
# run of each benchmark, and the pytest suite (CUDA tests skip without a GPU; the CUDA kernels
# still run through the emulation). pytest runs last: its summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/cmake_test.sh
.venv/bin/python bench/run_all.py --smoke
.venv/bin/python -m pytest -q "$@"
