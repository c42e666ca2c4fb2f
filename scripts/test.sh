#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: the pytest suite (CUDA tests skip without a
# GPU; CUDA kernels still run through the emulation), the libtorch C++ consumer under ctest,
# and a smoke run of each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
scripts/cmake_test.sh
.venv/bin/python bench/run_all.py --smoke
