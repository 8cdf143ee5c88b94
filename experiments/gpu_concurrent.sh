#!/usr/bin/env bash
# How much gpu_ladder gains from sharing one GPU between several runs (its `parallel_runs: 8`):
# eight real runs of its smallest size, one, four and eight at a time, each level on a fresh
# store (about 6 minutes on one H100/H200: an estimate). Results (CSV + JSON with the GPU, a
# Markdown table) go to $OUT (or docs/bench_concurrent/); copy them into docs/bench_concurrent/
# and the table into docs/performance.md.
#   bash experiments/gpu_concurrent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-docs/bench_concurrent}"
python -m gpt5_ablate.bench_concurrent protocol=gpu_ladder size=ladder_g1 runs=8 \
  concurrency=1,4,8 "out=$out"
