"""The default morph against the original method's own code, run in turn on the same machine.

The original (volotat/DiffMorph's ``morph.py``, TensorFlow) is not part of diffmorph and nothing is downloaded:
give its script (``--original``) and a Python that has what it imports (``--python``; on Python 3.11,
``tensorflow-cpu==2.15.1 tensorflow-addons==0.23.0 "numpy<2" opencv-python-headless tqdm``). It is run as it is,
in a scratch folder (it writes ``train/``, ``morph/`` and ``preds.npy`` where it runs). Its full run, 1000
epochs at 1024 x 1024, takes a quarter of an hour on 2 cores, so each round times it at 10 and at 40 epochs (whole
processes: TensorFlow's start, the fit, its 100-frame render) and estimates 1000 epochs as
``t10 + 990 * (t40 - t10) / 30`` (``--full`` runs the 1000 instead); then diffmorph's default morph of the same
pair (``diffmorph morph A B -o OUT``: 100 frames, the default outputs). The ratio is taken round by round, so a
machine whose speed drifts still compares like with like.

With a headless OpenCV the original stops at its last line (``cv2.destroyAllWindows`` needs a GUI) after writing
every output; a run counts when its last output, ``morph/result.jpg``, was written.

    python benchmarks/compare_original.py --original ~/DiffMorph/morph.py --python ~/tf/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_morph import write_pair
from report import add_record_flag, print_header, recorded

EPOCHS = (10, 40)


def original(python: Path, script: Path, a: Path, b: Path, epochs: int) -> float:
    """Wall seconds of the original's whole run at ``epochs``, in a scratch folder of its own."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "train").mkdir()
        (folder / "morph").mkdir()
        started = time.perf_counter()
        done = subprocess.run([str(python), str(script), "-s", str(a), "-t", str(b), "-e", str(epochs)], cwd=folder,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if not (folder / "morph" / "result.jpg").is_file():
            raise SystemExit(f"the original did not finish ({epochs} epochs, exit {done.returncode}): "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no message'}")
        return wall


def diffmorph_morph(a: Path, b: Path, out: Path) -> float:
    """Wall seconds of ``diffmorph morph A B -o OUT`` with the defaults."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffmorph", "morph", str(a), str(b), "-o", str(out), "-q"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="the original's morph.py")
    parser.add_argument("--python", type=Path, required=True, help="a Python with TensorFlow and what it imports")
    parser.add_argument("--size", type=int, default=1024, help="side of the demo pair (the original fits at 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="run the original's 1000 epochs instead of estimating")
    add_record_flag(parser)
    args = parser.parse_args()
    if not args.original.is_file():
        raise SystemExit(f"--original {args.original}: no such file; give the path of the original's morph.py")

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        a, b = write_pair(folder, args.size, args.size, None)
        for round_ in range(1, args.rounds + 1):
            if args.full:
                short, long, whole = None, None, original(args.python, args.original, a, b, 1000)
            else:
                short, long = (original(args.python, args.original, a, b, epochs) for epochs in EPOCHS)
                whole = short + (1000 - EPOCHS[0]) * (long - short) / (EPOCHS[1] - EPOCHS[0])
            ours = diffmorph_morph(a, b, folder / f"out{round_}")
            rows.append((round_, short, long, whole, ours))
            print(f"  round {round_}: original {whole:.0f} s, diffmorph {ours:.1f} s", file=sys.stderr)

    with recorded("The default morph against the original method's code", args.record):
        print_header("cpu")
        print(f"pair: built-in demo pair at {args.size}×{args.size}; the original: {args.original.name} at 1000 "
              f"epochs ({'run' if args.full else 'estimated from its 10- and 40-epoch runs'}), its 100-frame "
              f"render included; diffmorph: `diffmorph morph a.png b.png -o out` (defaults); one after the other")
        print()
        print("| round | original 10 epochs s | original 40 epochs s | original 1000 epochs s | diffmorph s | ratio |")
        print("|---|---|---|---|---|---|")
        for round_, short, long, whole, ours in rows:
            shown = [f"{value:.1f}" if value is not None else "—" for value in (short, long)]
            print(f"| {round_} | {shown[0]} | {shown[1]} | {whole:.0f} | {ours:.1f} | {whole / ours:.1f}× |")
        print()
        print(f"median ratio: {statistics.median(whole / ours for *_, whole, ours in rows):.1f}×")


if __name__ == "__main__":
    main()
