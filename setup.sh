#!/usr/bin/env bash
# Install PortraitBooth (editable, with its pinned dependencies) into the current Python environment.
#   bash setup.sh          the app, the CLI and training
#   bash setup.sh --test   also what the tests need: pytest, Playwright and Debian's chromium (apt-get)
set -euo pipefail
cd "$(dirname "$0")"
extras=train
if [ "${1:-}" = "--test" ]; then
  extras=train,test
  if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  fi
fi
python -m pip install --quiet -e ".[${extras}]"
# facenet-pytorch (MTCNN, weights in its wheel) pins an old torch in its metadata; its code runs on ours.
python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
python -c "import torch, diffusers, facenet_pytorch; print(f'ready: torch {torch.__version__}, diffusers {diffusers.__version__}, CUDA {torch.cuda.is_available()}')"
