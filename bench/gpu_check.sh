#!/usr/bin/env bash
# The GPU check of issue 18 item 3, for a machine with a CUDA device (a few minutes):
#   1. the CUDA tests: training and data LSR on the GPU against the CPU on small float64 models;
#   2. Burgers DeepONet LSR (the authors' trained network, bench/lsr_burgers.py) on the GPU at
#      ranks 1000 / 3000 / 10^4 from one basis of rank 10^4: seconds, host and GPU peak memory
#      (torch.cuda.max_memory_allocated);
#   3. its agreement with the CPU: the same LSR at largest rank 1000 on the GPU and on the CPU
#      (errors side by side).
# Needs the trained checkpoint bench/results/lsr_burgers/train_burgers_1000_2000/ and the dataset
# cache .cache/pinn_lsr/burgers-*.h5 (both ignored by git: carry them to the device machine, or
# they are made first: about 50 min of training on 2 cores, 1 min of data).
# Usage: bash bench/gpu_check.sh [threads for the CPU run, default: all cores]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
PY=.venv/bin/python
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
echo "== 1. CUDA tests"
$PY -m pytest -q -rs -k cuda tests/parallel/test_device.py tests/lsr/test_refine.py tests/train/test_loop.py
echo "== 2. Burgers DeepONet LSR on the GPU, ranks 1000 / 3000 / 10^4"
time $PY bench/lsr_burgers.py --device cuda --mpi-ranks 1 --threads 4 --ranks 1000 3000 10000
echo "== 3. agreement at largest rank 1000: GPU, then CPU ($threads threads)"
$PY bench/lsr_burgers.py --device cuda --mpi-ranks 1 --threads 4 --ranks 1000
$PY bench/lsr_burgers.py --device cpu --mpi-ranks 1 --threads "$threads" --ranks 1000 --agreement
