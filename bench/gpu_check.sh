#!/usr/bin/env bash
# One command for a lent GPU machine (DESIGN §6): builds the extension against that machine's own
# torch, runs the whole test suite (CUDA tests included), runs every benchmark at GPU sizes, and
# writes logs, JSON and PNG into OUTDIR (commit them under bench/results/, naming the card).
#
#   bench/gpu_check.sh OUTDIR            # e.g. through the device tool: bench/gpu_check.sh $OUT
#   SMOKE=1 bench/gpu_check.sh OUTDIR    # tiny benchmark sizes (a dry run of the script)
#
# Packages the GPU image lacks (faiss, pytorch-metric-learning) make their tests skip or fail
# without stopping the script; the exit status is that of the build and the CUDA tests.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi || echo "no nvidia-smi"; $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

echo "== build"
start=$(date +%s)
if ! MAX_JOBS=$(nproc) $py setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "build failed"; exit 1
fi
echo "build: $(( $(date +%s) - start )) s"

echo "== CUDA tests"
$py -m pytest -q -m cuda -p no:cacheprovider > "$out/tests-cuda.log" 2>&1
cuda_status=$?
tail -3 "$out/tests-cuda.log"
echo "== all tests"
$py -m pytest -q -p no:cacheprovider --continue-on-collection-errors > "$out/tests-all.log" 2>&1
tail -3 "$out/tests-all.log"

echo "== benchmarks"
bench_args=(--device cuda --out-dir "$out")
[ "${SMOKE:-0}" = 1 ] && bench_args+=(--smoke)
$py bench/run_all.py "${bench_args[@]}" 2>&1 | tee "$out/bench.log" | grep -v "^B=" | tail -60
exit $cuda_status
