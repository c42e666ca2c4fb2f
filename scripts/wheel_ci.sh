#!/usr/bin/env bash
# Builds diva_ext's wheel as a library user would (`pip wheel --no-build-isolation --no-deps .`
# against the torch of the environment), installs it into a virtualenv that holds only torch,
# and runs the smoke tests against the installed package from outside the checkout:
#   1. with nothing but torch importable: diva_ext and its library modules import, one op runs;
#   2. pytest (from a side folder on PYTHONPATH): python_tests/test_wheel_smoke.py (the three ops
#      on the CPU against diva_ext.reference), test_light_import.py and test_readme_examples.py
#      (the README's examples; the pytorch-metric-learning one runs: it is in the side folder).
#
#   scripts/wheel_ci.sh [PYTEST ARGS...]
#
# Environment: WHEEL_PYTHON (a python3.11; default python3.11 on PATH, else pyenv's), WHEEL_TORCH
# (default: the torch pinned in requirements.txt), WHEEL_CUDA=1 to compile the CUDA kernels too
# (default 0: DIVA_FORCE_CPU=1, the CPU kernels only; the CUDA build takes several times longer),
# MAX_JOBS (default: all cores).
# Cached under $DIVA_CACHE (default ~/.cache/diva_ext) between runs, keyed by interpreter and torch:
#   wheel-venv-…   the torch-only environment (diva_ext is uninstalled again at the start of a run);
#   wheel-tools-…  setuptools + ninja for the build, pytest + pytorch-metric-learning for the tests,
#                  installed with --target, outside the environment;
#   wheel-tree-…   a mirror of the checkout (scripts/sync_tree.py), so the wheel's ninja build
#                  recompiles only the files that changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${DIVA_CACHE:-$HOME/.cache/diva_ext}
mkdir -p "$cache"

find_python() {
  if [ -n "${WHEEL_PYTHON:-}" ]; then echo "$WHEEL_PYTHON"; return; fi
  if python3.11 -c '' 2>/dev/null; then command -v python3.11; return; fi
  local p
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "wheel_ci: no Python 3.11 found (set WHEEL_PYTHON)" >&2
  exit 1
}
python=$(find_python)
torch_version=${WHEEL_TORCH:-$(sed -n 's/^torch==//p' requirements.txt)}
variant=$([ "${WHEEL_CUDA:-0}" = 1 ] && echo cuda || echo cpu)
key=$({ "$python" -VV; echo "torch==$torch_version"; } | sha256sum | cut -c1-12)
venv=$cache/wheel-venv-py3.11-torch$torch_version-$key
tools=$cache/wheel-tools-$key
tree=$cache/wheel-tree-$variant-$key
log=$cache/wheel-$variant-$key.log
: > "$log"

exec 9> "$cache/wheel.lock"
flock 9

pip_quietly() {  # pip with its output in the log (the local index config warns per package)
  "$venv/bin/python" -m pip "$@" >> "$log" 2>&1 || { tail -30 "$log"; echo "wheel_ci: pip $* failed (log: $log)"; exit 1; }
}

t0=$(date +%s)
if [ ! -f "$venv/.complete" ]; then
  echo "wheel_ci: creating $venv (first run: installs torch $torch_version)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip_quietly install -q --upgrade pip
  pip_quietly install -q "torch==$torch_version"
  touch "$venv/.complete"
fi
pip_quietly uninstall -y -q diva_ext
if [ ! -f "$tools/.complete" ]; then
  echo "wheel_ci: installing the build and test tools into $tools"
  rm -rf "$tools"
  pip_quietly install -q --target "$tools/build" "setuptools>=64" ninja
  # --no-deps: torch is the environment's; the others are the tools' own dependencies.
  pip_quietly install -q --no-deps --target "$tools/test" pytest iniconfig packaging pluggy pygments \
    pytorch-metric-learning numpy scikit-learn scipy joblib threadpoolctl tqdm
  touch "$tools/.complete"
fi
t1=$(date +%s)

"$venv/bin/python" scripts/sync_tree.py "$root" "$tree"
rm -rf "$tree/dist-wheel"
echo "wheel_ci: pip wheel --no-build-isolation --no-deps ($variant build, torch $torch_version) in $tree"
force_cpu=$([ "$variant" = cuda ] && echo 0 || echo 1)
if ! (cd "$tree" && PATH="$tools/build/bin:$PATH" PYTHONPATH="$tools/build" DIVA_FORCE_CPU=$force_cpu \
      MAX_JOBS=${MAX_JOBS:-$(nproc)} "$venv/bin/python" -m pip wheel --no-build-isolation --no-deps \
      -w dist-wheel . >> "$log" 2>&1); then
  tail -40 "$log"
  echo "wheel_ci: wheel build failed (log: $log)"
  exit 1
fi
wheel=$(ls "$tree"/dist-wheel/diva_ext-*.whl)
t2=$(date +%s)

pip_quietly install -q "$wheel"
"$venv/bin/python" - "$wheel" "$torch_version" "$variant" <<'EOF'
import sys, zipfile, torch
wheel, want_torch, variant = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
compiled = [n for n in names if n.startswith("diva_ext/_C.") and n.endswith(".so")]
assert len(compiled) == 1, f"{wheel}: compiled library {compiled}"
assert not [n for n in names if "_cuda_emulated" in n or n.startswith(("csrc/", "python_tests/"))], names
# Installing resolved diva_ext's torch requirement against the torch already there.
assert torch.__version__.split("+")[0] == want_torch, f"pip replaced torch {want_torch} by {torch.__version__}"
print(f"wheel_ci: {wheel.rsplit('/', 1)[1]}: {len(names)} files, {compiled[0]}")
EOF
t3=$(date +%s)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
# 1. Only torch: the environment lacks every optional package, and the library still works.
"$venv/bin/python" -I - "$venv" "$variant" <<'EOF'
import importlib.util, sys
venv, variant = sys.argv[1:]
present = [m for m in ("numpy", "tqdm", "matplotlib", "torchvision", "faiss", "scipy", "PIL", "pytest")
           if importlib.util.find_spec(m)]
assert not present, f"the environment should hold only torch, but has {present}"
import torch
import diva_ext, diva_ext.losses, diva_ext.miners, diva_ext.moco  # noqa: E401
assert diva_ext.__file__.startswith(venv), diva_ext.__file__
assert diva_ext.cuda_built() == (variant == "cuda"), (diva_ext.cuda_built(), variant)
x = torch.randn(9, 5, dtype=torch.float64)
torch.testing.assert_close(diva_ext.ops.pairwise_distance(x), diva_ext.reference.pairwise_distance(x))
print(f"wheel_ci: diva_ext {diva_ext.__version__} imports from {diva_ext.__file__} with only torch "
      f"{torch.__version__} installed (CUDA kernels: {diva_ext.cuda_built()})")
EOF
# 2. The smoke tests against the installed package (-P: not the checkout's diva_ext).
rc=0
DIVA_EXPECT_PACKAGE_UNDER=$venv PYTHONPATH=$tools/test "$venv/bin/python" -P -m pytest -q -p no:cacheprovider \
  -c "$tree/pytest.ini" --rootdir "$tree" "$tree/python_tests/test_wheel_smoke.py" \
  "$tree/python_tests/test_light_import.py" "$tree/python_tests/test_readme_examples.py" "$@" || rc=$?
echo "wheel_ci: environment and tools $((t1 - t0)) s, wheel build $((t2 - t1)) s, install $((t3 - t2)) s," \
     "tests $(( $(date +%s) - t3 )) s, total $(( $(date +%s) - t0 )) s"
exit $rc
