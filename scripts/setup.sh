#!/usr/bin/env bash
# Sets up everything from nothing, idempotently: the virtualenv (.venv), the pinned packages,
# the editable install (the `diva` command) and the compiled extension (incremental rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing packages (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-test.txt
  echo "$want" > "$stamp"
fi

if ! .venv/bin/python -m pip show -q diva_ext >/dev/null 2>&1; then
  DIVA_METADATA_ONLY=1 .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
fi

. scripts/compiler_cache.sh
echo "setup: building the extension (incremental)"
start=$(date +%s)
.venv/bin/python setup.py -q build_ext --inplace
echo "setup: build done in $(( $(date +%s) - start )) s"
