#!/usr/bin/env bash
# The whole GPU speed table in one call (< 8 min on one H100/H200), for a session that is lent a
# GPU for a few minutes. Results (CSV + JSON with GPU, torch and CUDA versions) go to $OUT (or
# docs/bench_gpu/); copy them into docs/bench_gpu/ and the table into docs/performance.md.
#   bash experiments/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-docs/bench_gpu}"
mkdir -p "$out"
common=(model=gpt2_124m +bench=gpu "bench.output_dir=$out")
# 1. Every arm, eager and compiled, 16 x 1,024 tokens per step (16k).
python -m gpt5_ablate.bench "${common[@]}" trainer.compile=false bench.bare_baseline=true
python -m gpt5_ablate.bench "${common[@]}" trainer.compile=true bench.bare_baseline=true
# 2. MFU and Muon's share at 131k and 524k tokens per step (gradient accumulation), compiled.
for accum in 8 32; do
  python -m gpt5_ablate.bench "${common[@]}" trainer.compile=true trainer.grad_accum_steps=$accum \
    'bench.arms=[[attention=mha,optimizer=adamw,norm=none,pos=learned,ffn=gelu],[attention=gqa,optimizer=muon_adamw]]' \
    bench.bare_baseline=false bench.data_loader=false bench.repeats=2 bench.timed_steps=4
done
