#!/usr/bin/env bash
# One command for a GPU machine (docs/design.md §6), sized for a short slot on it: no network, under 8 minutes
# (--budget). Against that machine's own python3 and torch it builds the extension for its card's
# architecture only, runs the CUDA tests, every benchmark at GPU sizes (B up to 8192, K = 65536,
# D = 128 and 512; peers torch.cdist, the naive MoCo code, torch.compile of the references,
# pytorch-metric-learning only when installed), then a short training run with --device cuda
# (float32, then --amp bf16): the measurements come before the smoke run, so that a short budget
# cuts the latter. A step that fails or runs out of time is reported and the others still run.
#
#   bench/gpu_check.sh OUTDIR              # benchmark JSON, summary.txt and logs.tar.gz into OUTDIR
#   bench/gpu_check.sh --dry-run OUTDIR    # everything that needs no GPU (CI): the same steps,
#                                          # incremental build, CPU training, benchmarks at tiny sizes
# Options: --budget SECONDS (default 450: the whole run), --no-build (use the extension already
# in diva_ext/, e.g. one built by scripts/gpu_stack_ci.sh for sm_90 and carried along).
# Environment: PYTHON (default python3), DIVA_TEST_SEED (default: a fresh one, printed).
#
# OUTDIR (new or empty) receives few files, as the device tool brings back at most 8: the
# benchmark JSON named after the card (<benchmark>-<card>.json), summary.txt (the table printed
# at the end) and logs.tar.gz (every log, the plots and the training runs' metrics).
# Exit status: 0 when every step succeeded, 1 when one did not, 2 for bad arguments.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '9,15p' "$0" | sed 's/^# \{0,1\}//'; }
die_usage() { echo "gpu_check: $1" >&2; usage >&2; exit 2; }

dry_run=0 build=1 budget=450 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --no-build) build=0 ;;
    --budget)
      [ $# -ge 2 ] || die_usage "--budget needs a number of seconds"
      [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 60 ] || die_usage "--budget must be whole seconds, at least 60, got '$2'"
      budget=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die_usage "unknown option '$1'" ;;
    *) [ -z "$out" ] || die_usage "one OUTDIR only (got '$out' and '$1')"; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || die_usage "OUTDIR is missing"
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
  die_usage "OUTDIR '$out' exists and is not an empty folder (an earlier run's results?); give a new one"
fi
mkdir -p "$out" || die_usage "cannot create OUTDIR '$out'"
out=$(cd "$out" && pwd)

py=${PYTHON:-python3}
command -v "$py" >/dev/null || die_usage "no Python '$py' (set PYTHON)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# One seed for every pytest process, so that a failure can be replayed.
export DIVA_TEST_SEED=${DIVA_TEST_SEED:-$(( (RANDOM << 15 | RANDOM) ))}
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
steps=$work/steps.tsv
: > "$steps"
start_all=$(date +%s)
deadline=$(( start_all + budget ))
echo "gpu_check: $( ((dry_run)) && echo "dry run, " )budget ${budget} s, python $py, DIVA_TEST_SEED=$DIVA_TEST_SEED"

# step NAME CAP_SECONDS CMD...: runs CMD with its output in $work/NAME.log, under the smaller of
# CAP and the time left; records ok / failed (exit status) / timed out / not run (no time left).
# `skipped` (skip) is for steps left out by design (the dry run, --no-build): not a failure.
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - $(date +%s) )) limit
  limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 10 ]; then
    printf '%s\tnot run\t0\tno time left in the budget\n' "$name" >> "$steps"
    echo "== $name: not run (no time left)"
    return 1
  fi
  echo "== $name (at most ${limit} s)"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" > "$work/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    printf '%s\tok\t%s\t\n' "$name" "$took" >> "$steps"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    printf '%s\ttimed out\t%s\tafter %s s\n' "$name" "$took" "$limit" >> "$steps"
  else
    printf '%s\tfailed\t%s\texit status %s\n' "$name" "$took" "$rc" >> "$steps"
  fi
  tail -n "${TAIL_LINES:-4}" "$work/$name.log"
  [ $rc -ne 0 ] && { echo "== $name: exit status $rc (log: logs.tar.gz/$name.log); tail:"; tail -25 "$work/$name.log"; }
  echo "== $name: ${took} s"
  return $rc
}
skip() { printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$steps"; echo "== $1: skipped ($2)"; }
not_run() { printf '%s\tnot run\t0\t%s\n' "$1" "$2" >> "$steps"; echo "== $1: not run ($2)"; }

# --- the machine: what it is, and which packages the steps below need are missing.
step machine 60 "$py" - "$dry_run" <<'EOF'
import importlib.util, os, platform, subprocess, sys
import torch
dry = sys.argv[1] == "1"
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cpus", os.cpu_count())
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip() or "nvidia-smi: no output")
except (OSError, subprocess.SubprocessError) as err:
    print("nvidia-smi:", err)
needed = ["numpy", "ninja", "pytest", "scipy", "tqdm", "matplotlib", "setuptools"]
optional = ["faiss", "pytorch_metric_learning", "xdist", "pytest_timeout"]
missing = [m for m in needed if importlib.util.find_spec(m) is None]
print("optional packages:", ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'no'}" for m in optional))
if missing:
    sys.exit(f"missing packages the steps need: {', '.join(missing)}")
if not dry and not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch (use --dry-run on a machine without a GPU)")
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF

# The GPU steps run when torch sees a GPU, even if the machine step found a package missing.
have_cuda=0
if [ $dry_run = 0 ] && "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  have_cuda=1
  arch=$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')
  tag=$("$py" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "_").replace("/", "_"))')
else
  tag=dryrun-cpu
fi

# --- build: on the GPU, for this card only and without the test-only emulation; in the dry run,
# with the same settings as scripts/setup.sh, so that it is the no-op incremental build.
build_ok=0
if [ $build = 0 ]; then
  skip build "--no-build"
  build_ok=1
elif [ $have_cuda = 1 ]; then
  step build 300 env TORCH_CUDA_ARCH_LIST="$arch" DIVA_SKIP_EMULATION=1 MAX_JOBS="$(nproc)" \
    "$py" setup.py build_ext --inplace && build_ok=1
elif [ $dry_run = 1 ]; then
  step build 300 env MAX_JOBS="$(nproc)" "$py" setup.py build_ext --inplace && build_ok=1
else
  not_run build "no GPU"
fi
if [ $build_ok = 1 ]; then
  step extension 60 "$py" -c '
import sys, torch, diva_ext
print("CUDA kernels built:", diva_ext.cuda_built())
if torch.cuda.is_available() and not diva_ext.cuda_built():
    sys.exit("the extension has no CUDA kernels")
' || build_ok=0
fi

if [ $build_ok = 1 ]; then
  # --- the CUDA tests (pytest -m cuda; they skip in the dry run). xdist and pytest-timeout when
  # the machine has them: in parallel, and a hung kernel fails its test instead of the whole run.
  pytest_args=(-q -m cuda -p no:cacheprovider -rfEs)
  "$py" -c 'import xdist' 2>/dev/null && [ $have_cuda = 1 ] && pytest_args+=(-n 4)
  "$py" -c 'import pytest_timeout' 2>/dev/null && pytest_args+=(--timeout 120)
  step tests-cuda 120 "$py" -m pytest "${pytest_args[@]}"

  # --- the benchmarks, each in its own process and time box, JSON straight into OUTDIR.
  for name in pairwise_distance distance_weighted_negatives info_nce supervised_info_nce; do
    if [ $have_cuda = 1 ]; then
      step "bench-$name" 150 "$py" bench/run_all.py --only "$name" --device cuda --min-run-time 0.3 \
        --out-dir "$out" --tag "$tag"
    else
      step "bench-$name" 150 "$py" bench/run_all.py --only "$name" --device cpu --smoke \
        --out-dir "$out" --tag "$tag"
    fi
  done

  # --- a short training run: one epoch of a few batches on the embedded synthetic data.
  if [ $have_cuda = 1 ]; then
    # --pretrained none: the check times the training step on the card; pretraining is its own job.
    train=(--epochs 1 --batches-per-epoch 20 --no-progress --pretrained none)
    step train-fp32 90 "$py" -m diva_ext.cli train --device cuda "${train[@]}" --out "$work/train-fp32"
    step train-bf16 90 "$py" -m diva_ext.cli train --device cuda --amp bf16 "${train[@]}" --out "$work/train-bf16"
  else
    tiny=(--epochs 1 --batch-size 8 --batches-per-epoch 2 --queue-batches 2 --image-size 16 --rho 10
          --milestones 1 --no-progress --pretrained none --data-option num_classes=6 images_per_class=5 image_size=16)
    step train-fp32 120 "$py" -m diva_ext.cli train --device cpu "${tiny[@]}" --out "$work/train-fp32"
    skip train-bf16 "bf16 autocast needs CUDA"
  fi
else
  for s in tests-cuda bench-pairwise_distance bench-distance_weighted_negatives bench-info_nce bench-supervised_info_nce train-fp32 train-bf16; do
    not_run "$s" "no usable extension"
  done
fi

# --- summary, then the logs (and plots) into one archive: OUTDIR stays a few files, for machines
# that hand back only a handful from a run.
mv "$out"/*.png "$work"/ 2>/dev/null
printf 'total\t%s\t%s\tbudget %s s\n' \
  "$(awk -F'\t' '$2 != "ok" && $2 != "skipped" {bad=1} END {print bad ? "failed" : "ok"}' "$steps")" \
  "$(( $(date +%s) - start_all ))" "$budget" >> "$steps"
# The JSON a step wrote, whether or not that step succeeded (nullglob: none is no error).
shopt -s nullglob
results=("$out"/*.json)
"$py" bench/gpu_summary.py "$steps" "${results[@]}" > "$out/summary.txt" 2> "$work/summary.log"
summary_rc=$?
[ -s "$out/summary.txt" ] || cat "$work/summary.log"
tar -czf "$out/logs.tar.gz" -C "$work" --exclude='*.pt' . && rm -rf "$work"
echo
cat "$out/summary.txt"
echo "gpu_check: results in $out: $(cd "$out" && echo *)"
exit $(( summary_rc != 0 ))
