#!/usr/bin/env bash
# Rehearses, on a CPU machine, the stack of the GPU machines bench/gpu_check.sh has run on (their own Python and
# torch; scripts/gpu_stack_requirements.txt): builds the extension WITH its CUDA kernels against
# torch 2.11.0 / torchvision 0.26.0 on Python 3.12, in an environment of its own that has neither
# faiss nor pytorch-metric-learning, and runs the test suite there (CPU kernels and the CUDA
# emulation; tests needing a missing optional package skip, naming it).
#
#   scripts/gpu_stack_ci.sh [PYTEST ARGS...]     # default: the whole suite
#
# Both slow parts are cached under $DIVA_CACHE (default ~/.cache/diva_ext) for the next run on
# the same machine, keyed by the interpreter and the requirement set:
#   venv-…   the environment (a first run downloads and installs about 3 GB: 2-3 minutes);
#   tree-…   a mirror of the checkout (scripts/sync_tree.py rewrites only the files whose bytes
#            changed), so ninja recompiles only what changed (from nothing: ~9 minutes on a 2-core AMD EPYC).
# Environment: GPU_STACK_PYTHON (a python3.12; default: python3.12 on PATH, else pyenv's),
# TORCH_CUDA_ARCH_LIST (default 9.0: compiling every CUDA file once is enough to rehearse the
# build; bench/gpu_check.sh builds for the card it runs on).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
reqs=$root/scripts/gpu_stack_requirements.txt
cache=${DIVA_CACHE:-$HOME/.cache/diva_ext}
mkdir -p "$cache"

find_python() {
  if [ -n "${GPU_STACK_PYTHON:-}" ]; then echo "$GPU_STACK_PYTHON"; return; fi
  if python3.12 -c '' 2>/dev/null; then command -v python3.12; return; fi
  local p
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "gpu_stack: no Python 3.12 found (set GPU_STACK_PYTHON)" >&2
  exit 1
}
python=$(find_python)
key=$({ "$python" -VV; cat "$reqs"; } | sha256sum | cut -c1-12)
venv=$cache/venv-py3.12-torch2.11.0-$key
tree=$cache/tree-py3.12-torch2.11.0-$key

# One run at a time per cache (two CI jobs on one machine would share the venv and the build).
exec 9> "$cache/gpu_stack.lock"
flock 9

t0=$(date +%s)
if [ ! -f "$venv/.complete" ]; then
  echo "gpu_stack: creating $venv (first run: downloads torch and its CUDA libraries)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$reqs"
  touch "$venv/.complete"
fi
# The rehearsal is only worth something if the environment is the GPU machines' one.
"$venv/bin/python" - <<'EOF'
import importlib.util, sys, torch, torchvision
assert sys.version_info[:2] == (3, 12), sys.version
assert torch.__version__.split("+")[0] == "2.11.0" and torch.version.cuda, torch.__version__
assert torchvision.__version__.split("+")[0] == "0.26.0", torchvision.__version__
present = [m for m in ("faiss", "pytorch_metric_learning") if importlib.util.find_spec(m)]
assert not present, f"the GPU machines lack {present}; so must this environment"
print(f"gpu_stack: Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}),"
      f" torchvision {torchvision.__version__}")
EOF
t1=$(date +%s)

"$venv/bin/python" scripts/sync_tree.py "$root" "$tree"
cd "$tree"
echo "gpu_stack: building the extension with CUDA in $tree (incremental)"
if ! TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     "$venv/bin/python" setup.py build_ext --inplace > "$tree.build.log" 2>&1; then
  tail -40 "$tree.build.log"
  echo "gpu_stack: build failed (full log: $tree.build.log)"
  exit 1
fi
grep -q "^\[[0-9]*/[0-9]*\] .*nvcc" "$tree.build.log" && echo "gpu_stack: CUDA files were recompiled"
"$venv/bin/python" - <<'EOF'
import torch, diva_ext, diva_ext._C, diva_ext._cuda_emulated  # noqa: F401
# The CUDA kernels were compiled in: the ops have CUDA registrations even without a GPU.
missing = [op for op in ("pairwise_distance", "info_nce", "distance_weighted_negatives")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"diva_ext::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
EOF
t2=$(date +%s)
echo "gpu_stack: built for CUDA arch ${TORCH_CUDA_ARCH_LIST:-9.0}:" "$tree"/diva_ext/_C.*.so \
     "(bench/gpu_check.sh --no-build can use it on an H100/H200 with the same torch)"

rc=0
PYTHONPATH=$tree "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs --durations=15 "$@" || rc=$?
echo "gpu_stack: environment $((t1 - t0)) s, build $((t2 - t1)) s, tests $(( $(date +%s) - t2 )) s," \
     "total $(( $(date +%s) - t0 )) s"
exit $rc
