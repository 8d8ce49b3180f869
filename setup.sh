#!/usr/bin/env bash
# Install PortraitBooth (editable, with its pinned dependencies) into the Python that ./python runs: the active venv
# or conda environment, else .venv/ here when it exists, else the Python on PATH (python, else python3). When that
# Python may not install packages (PEP 668, e.g. Debian's and Ubuntu's system Python), setup makes .venv/ here first.
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

# What ./python runs, in one line: may it install ("ready"), has it no pip ("no-pip"), or is it the system's
# ("managed": PEP 668's marker beside its standard library, which counts outside a venv only); its version; its path.
probe='import importlib.util, os, sys, sysconfig
marked = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
managed = marked and sys.prefix == sys.base_prefix
state = "managed" if managed else "ready" if importlib.util.find_spec("pip") else "no-pip"
print(state, "%d.%d" % sys.version_info[:2], sys.executable)'
inspect_python() {
  found=$(./python -c "$probe")
  read -r state version interpreter <<< "$found"
}

# The project environment .venv/, made by the Python on PATH. Its venv module needs ensurepip, which Debian and Ubuntu
# ship apart in pythonX.Y-venv: installed here when root, else named in one line.
make_venv() {
  echo "setup.sh: $interpreter may not install packages (PEP 668); making the project environment .venv/ here," \
    "which ./python runs"
  if ! "$interpreter" -c "import ensurepip" 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv"
    else
      echo "setup.sh: error: $interpreter cannot make a virtual environment; install python$version-venv" \
        "(sudo apt-get install python$version-venv), then run bash setup.sh again" >&2
      exit 1
    fi
  fi
  rm -rf .venv
  "$interpreter" -m venv .venv
}

inspect_python
if [ "$state" = no-pip ] && [ "$interpreter" = "$PWD/.venv/bin/python" ]; then
  rm -rf .venv  # half made (its ensurepip was missing): made again below
  inspect_python
fi
if [ "$state" = managed ]; then
  make_venv
  inspect_python
fi
./python -m pip install --quiet -e ".[${extras}]"
# facenet-pytorch (MTCNN, weights in its wheel) pins an old torch in its metadata; its code runs on ours.
./python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
./python -c "import sys, torch, diffusers, facenet_pytorch
print(f'ready in {sys.prefix}: torch {torch.__version__}, diffusers {diffusers.__version__},',
      f'CUDA {torch.cuda.is_available()}')"
