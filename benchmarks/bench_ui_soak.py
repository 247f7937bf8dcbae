"""The page as a long-running service: its memory and disk over many jobs, and what it leaves when it stops.

``diffmorph ui`` runs as its own process, with a temporary folder of its own (``TMPDIR``, so its sessions' folders
and Gradio's cache are all under it). Several ``gradio_client`` clients, each its own session, submit at once, round
after round, one morph of a small pair and one re-render each; the server runs one job at a time. After each round
the table shows the server's resident memory and the size of its temporary folder; then the clients leave, the
server idles, and is stopped with SIGTERM: what it left in its folder is the last line. A second table gives each
kind of job's time from request to result, the queue's wait included: its median and 95th percentile.

    python benchmarks/bench_ui_soak.py
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from compare_modes import moved_pair
from report import add_record_flag, print_header, recorded


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def folder_mb(folder: Path) -> tuple[float, int]:
    """The size of the files under ``folder`` in MB, and their count."""
    sizes = []
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                sizes.append(path.stat().st_size)
        except OSError:  # removed while counted
            pass
    return sum(sizes) / 1e6, len(sizes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="sessions submitting at once")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of one morph and one re-render per client")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds the server idles after the last round")
    parser.add_argument("--side", type=int, default=96, help="side of the pair, in pixels")
    parser.add_argument("--steps", type=int, default=60, help="fit steps of each morph")
    parser.add_argument("--size", type=int, default=48, help="working size of each morph")
    add_record_flag(parser)
    args = parser.parse_args()
    job = {"frames": 12, "fps": 12, "steps": args.steps, "size": args.size}
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as scratch, recorded("The page over many jobs", args.record):
        scratch = Path(scratch)
        served = scratch / "server-tmp"
        served.mkdir()
        pictures = []
        for index, image in enumerate(moved_pair(args.side)):
            pictures.append(scratch / f"{index}.png")
            Image.fromarray(image).save(pictures[-1])
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "diffmorph", "ui", "--port", str(port), "--device", "cpu"],
                                  env={**os.environ, "TMPDIR": str(served)}, stderr=subprocess.PIPE, text=True)
        try:
            for line in server.stderr:  # "diffmorph: serving on http://..." once it listens
                if "serving on" in line:
                    break
            url = f"http://127.0.0.1:{port}/"
            print_header("cpu")
            print(f"{args.clients} clients at once, each a morph of a {args.side} x {args.side} pair ({job}) and "
                  "a re-render (16 frames) a round; the server's resident memory and its temporary folder after "
                  "each round\n")
            print("| after | resident MB | temporary folder MB | files |")
            print("|---|---|---|---|")
            print(f"| start | {resident_mb(server.pid):.0f} | {folder_mb(served)[0]:.1f} | {folder_mb(served)[1]} |")
            clients = [Client(url, verbose=False) for _ in range(args.clients)]
            errors: list[BaseException] = []
            latencies: dict[str, list[float]] = {"/morph": [], "/rerender": []}

            def one(client: Client) -> None:
                try:
                    images = [handle_file(str(path)) for path in pictures]
                    for endpoint, given in (("/morph", {"images": images, **job}), ("/rerender", {"frames": 16})):
                        started = time.perf_counter()
                        client.predict(**given, api_name=endpoint)
                        latencies[endpoint].append(time.perf_counter() - started)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            for round_number in range(1, args.rounds + 1):
                workers = [threading.Thread(target=one, args=(client,)) for client in clients]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                if errors:
                    raise SystemExit(f"a job failed: {errors[0]}")
                size, count = folder_mb(served)
                print(f"| round {round_number} | {resident_mb(server.pid):.0f} | {size:.1f} | {count} |", flush=True)
            for client in clients:
                client.close()
            time.sleep(args.idle)
            size, count = folder_mb(served)
            print(f"| {args.idle:g} s idle, clients gone | {resident_mb(server.pid):.0f} | {size:.1f} | {count} |")
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            size, count = folder_mb(served)
            left = sum(1 for _ in served.rglob("*"))
            print(f"| stopped (SIGTERM) | — | {size:.1f} | {count} ({left} entries in all) |")
            print("\nEach job's time from its request to its result, waiting in the queue included (one job runs at "
                  "a time):\n")
            print("| job | count | p50 s | p95 s |")
            print("|---|---|---|---|")
            for endpoint, seconds in latencies.items():
                print(f"| {endpoint.strip('/')} | {len(seconds)} | {statistics.median(seconds):.1f} | "
                      f"{statistics.quantiles(seconds, n=20)[-1]:.1f} |")
        finally:
            if server.poll() is None:
                server.kill()


if __name__ == "__main__":
    main()
