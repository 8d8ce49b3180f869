#!/usr/bin/env bash
# Install everything PortraitBooth needs into the current Python environment (a virtualenv works too).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
python -m pip install --quiet -r requirements.txt
python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
python -c "import torch, diffusers, facenet_pytorch; print(f'ready: torch {torch.__version__}, diffusers {diffusers.__version__}, CUDA {torch.cuda.is_available()}')"
