#!/bin/bash
# The whole device check in one command, on a machine with one CUDA GPU (under 10 minutes):
#     bash benchmarks/gpu_check.sh [OUT]          (default OUT: out/gpu-check)
# 1. the CUDA tests (python -m pytest -m gpu): fp16 against fp32, offload, tiling, the safety checker in fp16,
#    bf16 training with every loss, a resume, the LoRA recipe, 8-bit AdamW when bitsandbytes is installed;
# 2. the device check (python -m benchmarks.gpu): time and peak memory of inference and training.
# Everything lands in OUT: pytest.txt, benchmark.txt, gpu.json and gpu.md (the tables README's "Hardware" takes).
# Exit status: 0 when both passed, else the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # weights in the cache are used; nothing waits on a hub it cannot reach
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/nvidia-smi.txt"

# tests/test_cuda.py holds every gpu test; naming it keeps pytest from importing the app's test modules (gradio,
# playwright), which a bare GPU machine may lack. The project's own packages must be installed (setup.sh).
timeout 150 python -m pytest -m gpu -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest.txt"
tests=${PIPESTATUS[0]}
# A budget of 330 s (the command's default is 420 s) keeps the whole script within a 10-minute lease.
timeout 420 python -m benchmarks.gpu --json --out "$OUT" --budget 330 2>&1 | tee "$OUT/benchmark.txt"
benchmark=${PIPESTATUS[0]}
echo "gpu tests: exit $tests; device check: exit $benchmark; results in $OUT"
[ "$tests" -ne 0 ] && exit "$tests"
exit "$benchmark"
