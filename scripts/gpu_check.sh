#!/usr/bin/env bash
# The GPU check in one command: install the wheels in .whl/ (offline, into .site/) unless the
# packages they hold are there already, then run every GPU check within --budget-s (default
# 540 s, counted from the start of this script, the install included):
#   bash scripts/gpu_check.sh [--out DIR] [--smoke] [--budget-s S] [--steps A,B,...]
#                             [--test-cap-s S] [--allow-cpu] [--gpu-rows FILE]
#                             [--linalg library|inline]
# On a GPU node without a network, fetch the wheels beforehand on a machine with one, from the
# repo root (they go to .whl/):
#   bash scripts/fetch_wheels.sh
# Writes DIR/gpu_check.json, DIR/gpu_check.md, the tests' outcomes as they happen in
# DIR/pytest_events.jsonl (default DIR: gpu_check/). See scripts/gpu_check/check.py.
set -uo pipefail
export GPU_CHECK_CWD="$PWD"  # a relative --out is taken from here
cd "$(dirname "$0")/.."
export GPU_CHECK_STARTED
GPU_CHECK_STARTED=$(date +%s.%N)
export GPU_CHECK_SCRIPT=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# the packages the GPU image lacks (found, not imported: importing mjx and distrax takes seconds)
MODULES="mujoco, mujoco.mjx, distrax, brax, gymnasium"
NEEDED="import importlib.util as u, sys
sys.exit(any(u.find_spec(m.strip()) is None for m in '$MODULES'.split(',')))"
[ -d .site ] && export PYTHONPATH="$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

t0=$(date +%s.%N)
if "$PY" -c "$NEEDED" >/dev/null 2>&1; then
  GPU_CHECK_INSTALL="ok: nothing to install, everything is there"
elif compgen -G ".whl/*.whl" >/dev/null; then
  n=$(ls .whl/*.whl | wc -l)
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl >&2; then
    case ":$PYTHONPATH:" in
      *":$PWD/.site:"*) ;;
      *) export PYTHONPATH="$PWD/.site:$PYTHONPATH" ;;
    esac
    if "$PY" -c "$NEEDED" >/dev/null 2>&1; then
      GPU_CHECK_INSTALL="ok: installed $n wheels from .whl/ into .site/"
    else
      GPU_CHECK_INSTALL="failed: installed $n wheels, but one of $MODULES is still missing"
    fi
  else
    GPU_CHECK_INSTALL="failed: pip could not install .whl/*.whl into .site/"
  fi
else
  GPU_CHECK_INSTALL="failed: one of $MODULES is missing and there is no .whl/"
  GPU_CHECK_INSTALL+=" (fetch the wheels with: bash scripts/fetch_wheels.sh)"
fi
GPU_CHECK_INSTALL_S=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
export GPU_CHECK_INSTALL GPU_CHECK_INSTALL_S
echo "gpu_check.sh: ${GPU_CHECK_INSTALL} (${GPU_CHECK_INSTALL_S} s)"  # stdout: stderr keeps one line for an error
exec "$PY" -m scripts.gpu_check "$@"
