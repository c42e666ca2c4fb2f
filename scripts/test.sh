#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: the libtorch C++ consumer under ctest, the dry
# run of the GPU machines' script (bench/gpu_check.sh --dry-run: its steps on the CPU, a smoke run
# of each benchmark included), and the pytest suite (CUDA tests skip without a GPU; the CUDA
# kernels still run through the emulation). pytest runs last: its summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/cmake_test.sh
dry_run=$(mktemp -d)
dry_rc=0
PYTHON=.venv/bin/python bench/gpu_check.sh --dry-run "$dry_run/gpu_check" || dry_rc=$?
rm -rf "$dry_run"
pytest_rc=0
.venv/bin/python -m pytest -q "$@" || pytest_rc=$?
[ $dry_rc -eq 0 ] || echo "test: bench/gpu_check.sh --dry-run FAILED (its summary is above the pytest output)"
[ $pytest_rc -ne 0 ] && exit $pytest_rc
exit $(( dry_rc != 0 ))
