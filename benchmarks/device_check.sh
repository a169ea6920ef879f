#!/usr/bin/env bash
# The GPU machine's one command (issue 17), from the repository root of the carried tree:
#   bash benchmarks/device_check.sh            # the real run, about 8 minutes; JSON in $OUT/device_check.json
#   bash benchmarks/device_check.sh --dry-run  # CPU, tiny shapes
# Carry benchmarks/device_wheels and benchmarks/device_data (made here by benchmarks/fetch_device_wheels.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec python3 benchmarks/device_check.py "$@"
