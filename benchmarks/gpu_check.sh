#!/bin/bash
# The whole device check in one command, on a machine with one CUDA GPU, in under 8 minutes:
#     bash benchmarks/gpu_check.sh [OUT]          (default OUT: out/gpu-check)
# 0. packages: where wheels/ (or $WHEELS) holds wheels (bash benchmarks/gpu_wheels.sh makes it, for a machine with no
#    network), they are installed into a folder of their own that PYTHONPATH puts first; then every package the
#    check imports must import, else it stops here with one line naming the missing one;
# 1. the CUDA tests (python -m pytest -m gpu): fp16 against fp32, offload, tiling, the safety checker in fp16,
#    bf16 training with every loss, a resume, the LoRA recipe, 8-bit AdamW when bitsandbytes is installed;
# 2. the device check (python -m benchmarks.gpu): time and peak memory of inference and training.
# Everything lands in OUT: nvidia-smi.txt, packages.txt, pytest.txt, benchmark.txt, gpu.json and gpu.md (the tables
# README's "Hardware" takes). Exit status: 0 when both passed, else the first failure's (2 without a CUDA GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # weights in the cache are used; nothing waits on a hub it cannot reach
export PYTHONDONTWRITEBYTECODE=1
: >"$OUT/packages.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"

shopt -s nullglob
wheels=("${WHEELS:-wheels}"/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  site=${TMPDIR:-/tmp}/portraitbooth-site
  if ! timeout 60 ./python -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}" >"$OUT/packages.txt" 2>&1; then
    echo "gpu_check: error: installing wheels/ failed (see $OUT/packages.txt)" >&2
    exit 1
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# What the tests and the check import, with the versions they found (the project itself runs from this folder).
if ! ./python - >>"$OUT/packages.txt" 2>&1 <<'PY'; then
import importlib, sys
found = []
names = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub",
         "facenet_pytorch", "cv2", "PIL", "numpy", "scipy", "skimage", "yaml", "regex", "pytest")
for name in names:
    try:
        module = importlib.import_module(name)
    except Exception as error:
        sys.exit(f"gpu_check: error: Python package {name} does not import ({type(error).__name__}: {error}); "
                 "run `bash benchmarks/gpu_wheels.sh` where PyPI is reachable and bring wheels/ along")
    found.append(f"{name} {getattr(module, '__version__', '?')}")
print(sys.version.split()[0], "|", ", ".join(found))
PY
  tail -n 1 "$OUT/packages.txt" >&2
  exit 1
fi
tail -n 1 "$OUT/packages.txt"

# tests/test_cuda.py holds every gpu test; naming it keeps pytest from importing the app's test modules (gradio,
# playwright), which a bare GPU machine may lack.
timeout 120 ./python -m pytest -m gpu -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest.txt"
tests=${PIPESTATUS[0]}
# The check's own budget (270 s) and a margin for the measurement under way keep the script within 8 minutes.
timeout 300 ./python -m benchmarks.gpu --json --out "$OUT" --budget 270 2>&1 | tee "$OUT/benchmark.txt"
benchmark=${PIPESTATUS[0]}
echo "gpu tests: exit $tests; device check: exit $benchmark; results in $OUT"
[ "$tests" -ne 0 ] && exit "$tests"
exit "$benchmark"
