#!/usr/bin/env bash
# The GPU checks of scripts/gpu_check.py: PASS / FAIL / SKIP lines, exit 1 on any FAIL.
# Run where compete is installed (the README's install line); on a machine without CUDA every
# check says SKIP. --cpu runs the checks' own code on the CPU; --only TEXT picks checks.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec timeout 480 "$python" scripts/gpu_check.py "$@"
