#!/usr/bin/env bash
# Install diffmorph (editable), its web UI, its batch engine, its perceptual metric and its test tools into the
# active Python environment (the README makes and enters a virtual environment first).
#
# PyTorch comes first, by scripts/install_torch.py, only where no torch is importable yet: the CPU build from
# PyTorch's CPU index on Linux without an NVIDIA GPU (the default index would bring several GB of CUDA packages),
# the default build elsewhere. A torch already installed (any version the project supports) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

# A system Python that its distribution manages (Debian, Ubuntu) refuses pip: say what to do instead.
if ! "$python" -c 'import sys, sysconfig, pathlib
sys.exit(sys.prefix == sys.base_prefix and pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists())'
then
    echo "error: $python is the system's own Python, which refuses pip installs; make and enter a virtual environment first: python3 -m venv .venv && . .venv/bin/activate" >&2
    exit 1
fi
"$python" scripts/install_torch.py
"$python" -m pip install --quiet --editable ".[ui,batch,eval,test]"
"$python" -m diffmorph --version
