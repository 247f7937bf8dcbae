#!/usr/bin/env bash
# Install diffmorph (editable), its web UI, its batch engine, its perceptual metric and its test tools into the
# active Python environment.
#
# PyTorch is installed first, pinned to 2.13.0, only where no torch is importable yet: a plain
# dependency resolution would pick the newest build, which on Linux pulls several GB of CUDA
# packages. Where torch is already installed (any version the project supports), it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" -c "import torch" 2>/dev/null; then
    "$python" -m pip install --quiet "torch==2.13.0"
fi
"$python" -m pip install --quiet --editable ".[ui,batch,eval,test]"
"$python" -m diffmorph --version
