#!/usr/bin/env bash
# Builds and tests the project on a named software stack, on a CPU machine, in an environment of
# its own: the extension WITH its CUDA kernels (and the CUDA emulation), then pytest there (CPU
# kernels and the emulated CUDA kernels; tests needing a missing optional package skip, naming it).
#
#   scripts/stack_ci.sh STACK [PYTEST ARGS...]
#
# Stacks (each pins its packages in scripts/STACK_stack_requirements.txt):
#   gpu     the GPU machines' stack: Python 3.12, torch 2.11.0 / torchvision 0.26.0, neither faiss
#           nor pytorch-metric-learning. Default tests: the whole suite.
#   newest  the top of the declared range: Python 3.13, torch 2.15.0 / torchvision 0.29.2 (the
#           newest torchvision; it accepts torch >= 2.14), built with its CUDA kernels by PyPI's
#           CUDA 13.2 compiler (scripts/newest_stack_toolkit_requirements.txt, installed into the
#           environment): PyPI's only torch 2.15.0 wheel is a CUDA 13.2 build, and the machine's
#           nvcc 13.0 refuses its headers ("CUDA compiler and CUDA toolkit headers are
#           incompatible"). Default tests: the op tests and the CUDA emulation
#           (python_tests/test_{pairwise_distance,info_nce,distance_weighted}*.py,
#           python_tests/test_cuda_emulation_*.py), the evaluation without faiss and the CLI.
#
# A stack's CUDA toolkit, when it brings its own (scripts/STACK_stack_toolkit_requirements.txt),
# is a layer of that environment with a key of its own: changing it reinstalls ~200 MB, not the
# environment; CUDA_HOME then points at it (site-packages/nvidia/cuXX) for the build.
# Both slow parts are cached under $DIVA_CACHE (default ~/.cache/diva_ext) for the next run on
# the same machine, keyed by the stack, the interpreter and the requirement set:
#   venv-…   the environment (a first run downloads and installs about 3 GB);
#   tree-…   a mirror of the checkout (scripts/sync_tree.py rewrites only the files whose bytes
#            changed), so ninja recompiles only what changed (from nothing: ~9 minutes on 2 cores).
# Environment: STACK_PYTHON (the interpreter; default: pythonX.Y on PATH, else pyenv's),
# TORCH_CUDA_ARCH_LIST (default 9.0: compiling every CUDA file once is enough to rehearse the
# build; bench/gpu_check.sh builds for the card it runs on).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ $# -ge 1 ] || { echo "usage: scripts/stack_ci.sh gpu|newest [PYTEST ARGS...]" >&2; exit 2; }
stack=$1
shift
case $stack in
  gpu)    pyver=3.12 with_cuda=1 default_tests=() ;;
  newest) pyver=3.13 with_cuda=1
          default_tests=(python_tests/test_pairwise_distance*.py python_tests/test_info_nce*.py
                         python_tests/test_distance_weighted*.py python_tests/test_cuda_emulation_*.py
                         python_tests/test_evaluation_without_faiss.py python_tests/test_cli.py) ;;
  *) echo "stack_ci: unknown stack '$stack' (gpu or newest)" >&2; exit 2 ;;
esac
reqs=$root/scripts/${stack}_stack_requirements.txt
toolkit=$root/scripts/${stack}_stack_toolkit_requirements.txt
# The versions the environment must end up with are the requirement file's pins.
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$reqs"; }
torch_version=$(pin torch) vision_version=$(pin torchvision)
cache=${DIVA_CACHE:-$HOME/.cache/diva_ext}
mkdir -p "$cache"

find_python() {
  if [ -n "${STACK_PYTHON:-}" ]; then echo "$STACK_PYTHON"; return; fi
  if "python$pyver" -c '' 2>/dev/null; then command -v "python$pyver"; return; fi
  local p
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$pyver".*/bin/python"$pyver"; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "stack_ci: no Python $pyver found for the $stack stack (set STACK_PYTHON)" >&2
  exit 1
}
python=$(find_python)
# Keyed by the requirement lines only: a reworded comment must not cost a new 5 GB environment.
lines_key() { grep -v '^[[:space:]]*\(#\|$\)' "$@" | sha256sum | cut -c1-12; }
key=$({ "$python" -VV; grep -v '^[[:space:]]*\(#\|$\)' "$reqs"; } | sha256sum | cut -c1-12)
name=$stack-py$pyver-torch$torch_version-$key
venv=$cache/venv-$name
tree=$cache/tree-$name
say() { echo "$stack stack: $*"; }

# One run at a time per stack (two CI jobs on one machine would share the venv and the build).
exec 9> "$cache/$stack-stack.lock"
flock 9

t0=$(date +%s)
if [ ! -f "$venv/.complete" ]; then
  say "creating $venv (first run: downloads torch and its CUDA libraries)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$reqs"
  touch "$venv/.complete"
fi
if [ -f "$toolkit" ]; then
  toolkit_key=$(lines_key "$toolkit")
  if [ ! -f "$venv/.toolkit-$toolkit_key" ]; then
    say "installing the CUDA toolkit of $toolkit"
    rm -f "$venv"/.toolkit-*
    "$venv/bin/python" -m pip install -q -r "$toolkit"
    touch "$venv/.toolkit-$toolkit_key"
  fi
  CUDA_HOME=$("$venv/bin/python" -c 'import torch; from pathlib import Path
print(Path(torch.__file__).parent.parent / "nvidia" / ("cu" + torch.version.cuda.split(".")[0]))')
  export CUDA_HOME
  # The wheels ship only the versioned runtime (libcudart.so.13); torch's extension builder links
  # with -lcudart, which needs the unversioned name.
  cudart=$(cd "$CUDA_HOME/lib" && ls libcudart.so.* | head -1)
  [ -e "$CUDA_HOME/lib/libcudart.so" ] || ln -s "$cudart" "$CUDA_HOME/lib/libcudart.so"
  say "CUDA toolkit: $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | tail -1))"
fi
# The run is only worth something if the environment is the stack it names.
STACK=$stack PYVER=$pyver TORCH_VERSION=$torch_version VISION_VERSION=$vision_version \
"$venv/bin/python" - <<'EOF'
import importlib.util, os, sys, torch, torchvision
e = os.environ
assert "%d.%d" % sys.version_info[:2] == e["PYVER"], sys.version
assert torch.__version__.split("+")[0] == e["TORCH_VERSION"] and torch.version.cuda, torch.__version__
assert torchvision.__version__.split("+")[0] == e["VISION_VERSION"], torchvision.__version__
present = [m for m in ("faiss", "pytorch_metric_learning") if importlib.util.find_spec(m)]
assert not present, f"the {e['STACK']} stack has no {present}; neither must this environment"
print(f"{e['STACK']} stack: Python {sys.version.split()[0]}, torch {torch.__version__}"
      f" (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}")
EOF
t1=$(date +%s)

"$venv/bin/python" scripts/sync_tree.py "$root" "$tree"
cd "$tree"
if [ $with_cuda = 1 ]; then
  say "building the extension with CUDA in $tree (incremental)"
  force_cpu=0
else
  say "building the extension without CUDA (see the stack's note above) in $tree (incremental)"
  force_cpu=1
fi
# Exported: the tests read it to know whether CUDA kernels must be registered.
export DIVA_FORCE_CPU=$force_cpu
if ! TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     "$venv/bin/python" setup.py build_ext --inplace > "$tree.build.log" 2>&1; then
  tail -40 "$tree.build.log"
  say "build failed (full log: $tree.build.log)"
  exit 1
fi
grep -q "^\[[0-9]*/[0-9]*\] .*nvcc" "$tree.build.log" && say "CUDA files were recompiled"
"$venv/bin/python" - "$with_cuda" <<'EOF'
import sys, torch, diva_ext, diva_ext._C, diva_ext._cuda_emulated  # noqa: F401
# The CUDA kernels were compiled in: the ops have CUDA registrations even without a GPU.
if sys.argv[1] != "1":
    sys.exit(0)
missing = [op for op in ("pairwise_distance", "info_nce", "distance_weighted_negatives")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"diva_ext::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
EOF
t2=$(date +%s)
[ $with_cuda = 1 ] && say "built for CUDA arch ${TORCH_CUDA_ARCH_LIST:-9.0}:" "$tree"/diva_ext/_C.*.so \
    "(bench/gpu_check.sh --no-build can use it on an H100/H200 with the same torch)"

[ $# -gt 0 ] || set -- "${default_tests[@]}"
rc=0
PYTHONPATH=$tree "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs --durations=15 "$@" || rc=$?
say "environment $((t1 - t0)) s, build $((t2 - t1)) s, tests $(( $(date +%s) - t2 )) s," \
    "total $(( $(date +%s) - t0 )) s"
exit $rc
