#!/bin/bash
# The Python packages the device check needs on a bare GPU machine, as wheels in wheels/ (ignored by git), built
# here where PyPI is reachable, for a GPU machine that reaches no network:
#     bash benchmarks/gpu_wheels.sh [PYTHON]        (the GPU machine's Python version; default 3.12)
# That machine's Python has torch with CUDA and most of the rest (accelerate, safetensors, huggingface_hub, tokenizers,
# numpy, scipy, opencv, pillow, scikit-image, pytest); these are the ones it lacks, or holds at other versions than
# our pins (pyproject.toml; facenet-pytorch's in setup.sh): about 23 MB. benchmarks/gpu_check.sh installs them there.
# gradio, invisible-watermark and the browser tests' packages are not on the check's path and are not taken.
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${1:-3.12}
pins=()
for name in diffusers transformers peft facexlib regex; do
  pins+=("$(grep -oE "\"$name==[^\"]+\"" pyproject.toml | tr -d '"')")
done
pins+=("$(grep -oE 'facenet-pytorch==[0-9.]+' setup.sh)")
rm -rf wheels
mkdir wheels
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
./python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
  "${platforms[@]}" --dest wheels "${pins[@]}"
# filterpy (facexlib imports it) is published as source only: built here into its pure-Python wheel.
./python -m pip wheel --quiet --no-deps --wheel-dir wheels filterpy==1.4.5
ls wheels
du -ch wheels/*.whl | tail -1
