#!/usr/bin/env bash
# GPU check of the paper profile (see benchmarks/gpu_check.py); exits 0 with a note on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
