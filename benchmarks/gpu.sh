#!/usr/bin/env bash
# Benchmarks on a machine with an NVIDIA GPU, the OPT-125M-sized model in bf16:
# unlearning tokens/s and model FLOPs utilisation, evaluation tokens/s, then the
# ratio table (B1-B5) on the GPU. Run from the repository root, with lit-untrac
# installed in a CUDA build of torch:
#   bash benchmarks/gpu.sh            # sequences of 1024 tokens
#   SEQ_LEN=512 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ_LEN="${SEQ_LEN:-1024}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -m benchmarks.throughput --device cuda --precision bf16-mixed --seq-len "$SEQ_LEN"
python -m benchmarks --device cuda --precision bf16-mixed --model opt125m --seq-len "$SEQ_LEN" \
  --only B1 B2 B3 B4 B5 --examples 64 --steps 10 --repeats 3 --warmup 3
