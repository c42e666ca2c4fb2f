#!/usr/bin/env bash
# The GPU machines' stack (Python 3.12, torch 2.11.0, no faiss or pytorch-metric-learning):
# `scripts/stack_ci.sh gpu`, kept under this name for the commands that already call it.
exec "$(dirname "$0")/stack_ci.sh" gpu "$@"
