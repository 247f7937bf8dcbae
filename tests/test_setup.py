"""The setup's choice of torch build (``scripts/install_torch.py``): asked of PyTorch's CPU index on Linux without an
NVIDIA GPU, the default index elsewhere or where that index does not answer. The real CPU index is not reachable
from CI, so a local one stands in for it."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.py"


def _load():
    spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_torch = _load()


@pytest.fixture
def local_index(tmp_path):
    """A simple index on localhost that lists torch: its address."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_linux_without_nvidia_asks_the_cpu_index(local_index):
    command, note = install_torch.plan("python3", "Linux", nvidia=False, cpu_index=local_index)
    assert note is None
    assert command[-2:] == ["--index-url", local_index]
    assert f"torch=={install_torch.VERSION}" in command


def test_unreachable_cpu_index_falls_back_to_the_default_index_with_one_line():
    index = f"http://127.0.0.1:{_closed_port()}"
    command, note = install_torch.plan("python3", "Linux", nvidia=False, cpu_index=index)
    assert "--index-url" not in command
    assert note is not None and "\n" not in note and index in note and "default index" in note


@pytest.mark.parametrize(("system", "nvidia"), [("Linux", True), ("Darwin", False), ("Windows", False)])
def test_gpu_machines_and_other_systems_use_the_default_index(system, nvidia, local_index):
    command, note = install_torch.plan("python3", system, nvidia=nvidia, cpu_index=local_index)
    assert note is None
    assert "--index-url" not in command


def test_an_installed_torch_is_kept():
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "torch is already installed: kept"
