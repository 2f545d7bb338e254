#!/usr/bin/env bash
# Sweep of `spinedart bench-render` (2k-30k Gaussians, 128² and 256², both modes); one JSON line per run.
# Usage: Testing/bench/render_sweep.sh [THREADS] > sweep.jsonl
set -euo pipefail
threads="${1:-2}"
bin="$(dirname "$0")/../../.venv/bin/spinedart"
for size in 128 256; do
  for n in 2000 5000 10000 20000 30000; do
    "$bin" bench-render --mode ssm --n-gaussians "$n" --size "$size" --views 2 --threads "$threads" --repeats 9 --json | tail -1
  done
  "$bin" bench-render --mode voxels --size "$size" --views 2 --threads "$threads" --repeats 9 --json | tail -1
done
