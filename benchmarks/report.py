"""Benchmark tables: printed, and recorded in docs/benchmarks.md by the script that measured them.

Each command line owns one section of docs/benchmarks.md, between ``<!-- COMMAND -->`` and ``<!-- /COMMAND -->``;
running the same command again replaces its section and leaves the others as they are. ``--no-record`` prints
only.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import diffmorph

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
PREAMBLE = """# Benchmarks

Every table below was written by the benchmark script named in its command line (run from the repository's root),
on the machine and date it names; running the same command again replaces its table. Timings live here, never in
the test suite; what the figures mean is in each script's docstring, and why the method is built as it is, in
[method.md](method.md).
"""


def command() -> str:
    """The command line that runs this script, as a reader would type it."""
    return f"python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".replace(" --no-record", "").rstrip()


def machine(device: str) -> str:
    """The processor, core count, GPU where one is used, Python, torch and diffmorph versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"diffmorph {diffmorph.__version__}")


def print_header(device: str) -> None:
    """The lines every benchmark table starts with: the machine, the date and the command that made it."""
    print(f"machine: {machine(device)}")
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: {command()}")


@contextlib.contextmanager
def recorded(title: str, record: bool = True) -> Iterator[None]:
    """Print what the block prints and, unless ``record`` is False, make it ``title``'s section of
    docs/benchmarks.md for this command line."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    text = captured.getvalue().rstrip() + "\n"
    sys.stdout.write(text)
    if record:
        write_section(command(), f"## {title}\n\n{text}")
        print(f"\nrecorded in {BENCHMARKS}", file=sys.stderr)


def write_section(key: str, body: str) -> None:
    """Replace (or append) the section of docs/benchmarks.md marked with ``key``; written whole, then renamed."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else PREAMBLE
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    temporary = BENCHMARKS.with_suffix(".md.partial")
    temporary.write_text(text)
    temporary.replace(BENCHMARKS)


def add_record_flag(parser) -> None:
    """``--no-record``: print the table without writing it into docs/benchmarks.md."""
    parser.add_argument("--no-record", dest="record", action="store_false",
                        help="print the table only; by default it also replaces this command's table in "
                             "docs/benchmarks.md")
