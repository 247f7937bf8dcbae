"""Install the PyTorch build that fits this machine, before diffmorph itself (run by ``scripts/setup.sh``).

- A torch that is already importable is kept, whatever its build.
- Linux without an NVIDIA GPU: the CPU build, from PyTorch's CPU wheel index. The default package index serves the
  CUDA build there (several GB of NVIDIA packages that the CPU never uses). Where the CPU index cannot be reached,
  one line says so and the default index is used.
- Linux with an NVIDIA GPU, macOS and Windows: the default index's build (CUDA on Linux, the only one elsewhere).

Standard library only: it runs before anything is installed. ``--dry-run`` prints the pip command instead of
running it; ``DIFFMORPH_TORCH_CPU_INDEX`` names another CPU wheel index (a mirror).

    python3 scripts/install_torch.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

VERSION = "2.13.0"  # the release the project is tested with; any torch >= 2.2 already installed is kept
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 10.0  # an index that has not answered by then is treated as unreachable


def has_nvidia_gpu() -> bool:
    """Whether this machine shows an NVIDIA GPU: its driver is loaded, or ``nvidia-smi`` lists one."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def wants_cpu_index(system: str, nvidia: bool) -> bool:
    """Whether the CPU build must come from PyTorch's CPU index: on Linux without an NVIDIA GPU."""
    return system == "Linux" and not nvidia


def reachable(index: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``index`` (a simple package index) answers for torch within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=timeout) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pip_command(python: str, cpu_index: str | None) -> list[str]:
    """The pip command that installs torch; from ``cpu_index`` alone where one is given."""
    command = [python, "-m", "pip", "install", "--quiet", f"torch=={VERSION}"]
    return [*command, "--index-url", cpu_index] if cpu_index else command


def plan(python: str, system: str, nvidia: bool, cpu_index: str = CPU_INDEX) -> tuple[list[str], str | None]:
    """The pip command that installs torch on this machine, and a line to show first (None: nothing to say)."""
    if not wants_cpu_index(system, nvidia):
        return pip_command(python, None), None
    if reachable(cpu_index):
        return pip_command(python, cpu_index), None
    return pip_command(python, None), (f"PyTorch's CPU index ({cpu_index}) cannot be reached: installing torch from "
                                       "the default index, which on Linux may be the larger CUDA build")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is not None:
        print("torch is already installed: kept")
        return 0
    command, note = plan(sys.executable, platform.system(), has_nvidia_gpu(),
                         os.environ.get("DIFFMORPH_TORCH_CPU_INDEX", CPU_INDEX))
    if note:
        print(note)
    if args.dry_run:
        print(" ".join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
