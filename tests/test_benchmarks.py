"""The benchmark scripts run end to end on tiny inputs. Their figures belong in docs/benchmarks.md, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH_MORPH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_morph.py"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_bench_morph_times_morphs_renders_and_start_up(device):
    done = subprocess.run(
        [sys.executable, str(BENCH_MORPH), "--sizes", "40", "48", "--no-4k", "--runs", "2", "--frames", "3",
         "--device", device, "--options", "--steps 4 --refine 2 --align none", "--no-record"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith(("| default |", "| render |"))]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (f"| {case}", f"{size}×{size}", run) for size in (40, 48) for case in ("default", "render") for run in "12"]
    assert all(row[3] == "4 @ 128 + 2 @ 256" for row in rows)
    assert [row[4] == "—" for row in rows] == [False, False, True, True] * 2  # a render has no fit
    assert "start-up (`python -m diffmorph --version`): " in done.stdout
    assert "Where the median 48×48 morph's" in done.stdout and "| fit |" in done.stdout


def test_bench_morph_runs_an_earlier_diffmorph_in_turn_and_gives_the_ratios():
    # This checkout stands in for the earlier one: the rows and the ratio table are what is checked.
    source = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run(
        [sys.executable, str(BENCH_MORPH), "--sizes", "40", "--no-4k", "--runs", "2", "--frames", "3",
         "--options", "--steps 4 --refine 2 --align none", "--before", str(source), "--no-record"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cases = [line.split(" | ")[0] + f" {line.split(' | ')[2]}" for line in done.stdout.splitlines()
             if line.startswith(("| default", "| render"))]
    assert cases[:8] == ["| default, before 1", "| default 1", "| default, before 2", "| default 2",
                         "| render, before 1", "| render 1", "| render, before 2", "| render 2"]
    after = done.stdout.split("Against `--before ")[1].split("Where the median")[0]
    ratios = [line.split(" | ") for line in after.splitlines() if line.startswith(("| default", "| render"))]
    assert [(row[0], row[1]) for row in ratios] == [("| default", "40×40"), ("| render", "40×40")]
    assert all(len(row[5].split(", ")) == 2 and 0.2 < float(row[4]) < 5.0 for row in ratios)  # two runs, sane ratios


def test_an_earlier_diffmorph_that_is_not_there_is_refused_before_any_run(tmp_path):
    # A folder without the package would import this checkout's diffmorph: the two would be compared with itself.
    for script in (BENCH_MORPH, BENCH_MORPH.with_name("compare_versions.py")):
        done = subprocess.run([sys.executable, str(script), "--before", str(tmp_path), "--no-record"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "holds no diffmorph package" in done.stderr, done.stderr


def test_compare_starts_measures_each_start_and_draws_a_sheet(tmp_path):
    script = BENCH_MORPH.with_name("compare_starts.py")
    done = subprocess.run(
        [sys.executable, str(script), "--pairs", "grounds", "--starts", "auto", "none", "--size", "48", "--frames",
         "5", "--options", "--steps 4 --refine 2", "--sheets", str(tmp_path), "--no-record"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| grounds |")]
    assert [row[1] for row in rows] == ["auto", "none"]
    assert all(len(row) == 10 and row[6] != "—" and float(row[9].rstrip(" |")) >= 0 for row in rows)
    from PIL import Image

    with Image.open(tmp_path / "starts_grounds.png") as sheet:
        assert sheet.width >= 5 * 48 and sheet.height >= 2 * 48


def test_compare_masks_measures_a_kept_badge_and_draws_a_sheet(tmp_path):
    script = BENCH_MORPH.with_name("compare_masks.py")
    done = subprocess.run([sys.executable, str(script), "--size", "96", "--steps", "30", "--refine", "5", "--sheet",
                           str(tmp_path / "sheet.png"), "--no-record"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in done.stdout.splitlines()
            if line.startswith(("| none |", "| keep mask |"))}
    drift = {name: float(row[1].split(" / ")[0]) for name, row in rows.items()}
    assert drift["keep mask"] < 1.0 < drift["none"]  # held still, where the unguided warp carries it
    assert (tmp_path / "sheet.png").stat().st_size > 10_000


def test_compare_hints_measures_each_count_and_draws_a_sheet(tmp_path):
    script = BENCH_MORPH.with_name("compare_hints.py")
    done = subprocess.run([sys.executable, str(script), "--size", "64", "--steps", "20", "--refine", "5", "--sheet",
                           str(tmp_path / "sheet.png"), "--no-record"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith(("| look-alike |", "| mirr"))]
    assert [(row[0][2:], int(row[1])) for row in rows] == [(pair, count) for pair in ("look-alike", "mirrored")
                                                          for count in (0, 2, 4, 8)]
    hinted = [float(row[2].split(" ")[0]) for row in rows if row[2] != "—"]
    assert len(hinted) == 6 and max(hinted) < 0.02 * 64 * 2**0.5  # every hinted point within 2 % of the diagonal
    assert (tmp_path / "sheet.png").stat().st_size > 10_000


def test_bench_gif_measures_each_palette():
    done = subprocess.run(
        [sys.executable, str(BENCH_MORPH.with_name("bench_gif.py")), "--frames", "4", "--options",
         "--steps 4 --refine 2 --size 32", "--no-record"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith(("| demo |", "| moved |"))]
    assert [row[1] for row in rows] == ["frame (default)", "smooth", "clip", "clip, before"] * 2
    for row in rows:
        mean, least = (float(value) for value in row[2].split(" / "))
        assert 15 < least <= mean and float(row[3]) >= 0 and float(row[4]) > 0


def test_bench_threads_times_each_count_beside_a_busy_process():
    done = subprocess.run(
        [sys.executable, str(BENCH_MORPH.with_name("bench_threads.py")), "--size", "32", "--busy", "1",
         "--repeats", "1", "--options", "--steps 4 --refine 2 --size 16 --frames 3 --format frames", "--no-record"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert [row[1] for row in rows] == [*(str(count) for count in range(1, (os.cpu_count() or 1) + 1)),
                                        "default (idle cores)"]
    assert min(float(row[3].rstrip(" |")) for row in rows[:-1]) == 1.0 and float(rows[-1][2]) > 0


def test_bench_ui_soak_serves_rounds_and_leaves_nothing():
    pytest.importorskip("gradio_client", reason="the web UI's extra is not installed")
    done = subprocess.run(
        [sys.executable, str(BENCH_MORPH.with_name("bench_ui_soak.py")), "--clients", "2", "--rounds", "2", "--idle",
         "1", "--side", "48", "--steps", "4", "--size", "32", "--no-record"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("| after |")[1].split("\n\n")[0]  # the first table's rows, below its header
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows] == ["| start", "| round 1", "| round 2", "| 1 s idle, clients gone",
                                        "| stopped (SIGTERM)"]
    assert all(float(row[1]) > 50 for row in rows[:-1])  # the server's resident MB
    assert rows[-1][3] == "0 (0 entries in all) |"
    assert "| morph | 4 |" in done.stdout and "| rerender | 4 |" in done.stdout  # 2 clients x 2 rounds
