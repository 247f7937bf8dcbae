"""Bad input of every kind, through the real command: one line, exit 1 or 2, nothing of the user's lost, nothing
half-written, no hang."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from diffmorph.cli import main
from diffmorph.io.outputs import PARTIAL, remove_leftovers
from memory import PEAK_SCRIPT
from synthetic import blobs

FAST = ["--steps", "3", "--refine", "1", "--size", "16", "--frames", "3", "--device", "cpu", "-q"]


def run(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/"
            for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def one_line(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    paths = [folder / "a.png", folder / "b.png"]
    for index, path in enumerate(paths):
        Image.fromarray(blobs(24, 32, seed=index)).save(path)
    return paths


# Output folders: nothing of the user's is deleted or overwritten, and a run's set replaces the last one whole.

def test_files_of_others_in_the_way_are_refused_before_work(pair, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["morph", *pair, "-o", out, *FAST, "--format", "frames"], capsys)[0] == 0
    (out / "frames" / "holiday.jpg").write_text("mine")  # a file of the user's among diffmorph's frames
    before = snapshot(out)
    line = one_line(*run(["morph", *pair, "-o", out, *FAST, "--format", "frames"], capsys))
    assert "frames holds files diffmorph did not write (holiday.jpg)" in line and snapshot(out) == before
    (out / "morph.gif").write_text("my own gif")
    line = one_line(*run(["morph", *pair, "-o", out, *FAST, "--format", "gif"], capsys))
    assert "morph.gif exists and was not written by diffmorph" in line
    assert (out / "morph.gif").read_text() == "my own gif"


def test_a_link_in_the_way_is_refused(pair, tmp_path, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "frames").symlink_to(elsewhere, target_is_directory=True)
    line = one_line(*run(["morph", *pair, "-o", out, *FAST, "--format", "frames"], capsys))
    assert "symbolic link" in line and not any(elsewhere.iterdir())


def test_a_rerun_replaces_its_own_outputs_only_and_drops_formats_not_asked(pair, tmp_path, capsys):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(["morph", *pair, "-o", out, *FAST, "--format", "gif", "webp", "frames"], capsys)[0] == 0
    assert {"morph.gif", "morph.webp", "frames"} <= {p.name for p in out.iterdir()}
    assert run(["morph", *pair, "-o", out, *FAST, "--format", "gif"], capsys)[0] == 0
    names = {p.name for p in out.iterdir()}
    assert "morph.webp" not in names and "frames" not in names  # the earlier set went with it
    assert (out / "notes.txt").read_text() == "mine"
    manifest = json.loads((out / "config.json").read_text())["outputs"]
    assert set(manifest) == names - {"notes.txt"}


def test_an_empty_output_folder_is_a_usage_error(pair, capsys):
    code, err = run(["morph", *pair, "-o", "", *FAST], capsys)
    assert code == 2 and "output folder is empty" in one_line(code, err)


def test_a_failed_move_puts_the_earlier_set_back(pair, tmp_path, monkeypatch):
    from diffmorph.errors import OutputError
    from diffmorph.io import outputs

    out = tmp_path / "out"
    assert main([*map(str, ["morph", *pair, "-o", out, *FAST, "--format", "gif"])]) == 0
    before = snapshot(out)
    folder = outputs.OutputFolder(out, ["morph.gif", "contact_sheet.png", "config.json"])
    real = os.replace

    def failing(source, target):
        if Path(source) == folder.temp("contact_sheet.png"):  # the second new output, after the first moved in
            raise OSError(28, "No space left on device", str(target))
        return real(source, target)

    with pytest.raises(OutputError, match="No space left on device; the folder is as it was"), folder:
        for name in ("morph.gif", "contact_sheet.png"):
            folder.temp(name).write_text("new")
        folder.temp("config.json").write_text(json.dumps({"diffmorph_version": "x", "outputs": []}))
        monkeypatch.setattr(outputs.os, "replace", failing)
    monkeypatch.undo()
    assert snapshot(out) == before


KILLED_SWAP = """
import json, os, shutil, sys
from pathlib import Path
from diffmorph.io import outputs

folder, stop, content, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
calls = 0


def counted(real):
    def step(*args, **kwargs):
        global calls
        calls += 1
        if calls == stop:
            os._exit(137)  # killed outright: no handler, no cleanup
        return real(*args, **kwargs)
    return step


with outputs.OutputFolder(folder, names) as out:
    for name in names:
        out.temp(name).write_text(content if name != "config.json" else json.dumps(
            {"diffmorph_version": content, "outputs": names}))
    os.replace, shutil.rmtree = counted(os.replace), counted(shutil.rmtree)  # the swap's steps, counted
print(calls)
"""


def test_a_run_killed_at_any_step_of_its_swap_leaves_one_complete_set(tmp_path):
    """Killed at each rename (and each removal after them), then a new run: the earlier set whole, or the new one
    whole; nothing of another run's, no staging folder, and the user's own file untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")

    def swap(stop, content, names):
        return subprocess.run([sys.executable, "-c", KILLED_SWAP, str(out), str(stop), content, *names],
                              capture_output=True, text=True, timeout=120)

    earlier, later = ["a.txt", "b.txt", "c.txt", "config.json"], ["a.txt", "b.txt", "config.json"]
    assert swap(0, "old", earlier).returncode == 0
    old = snapshot(out)
    steps = int(swap(0, "new", later).stdout)  # 4 moves out, 3 in, the removals after them and any journal
    new = snapshot(out)
    assert steps >= 9 and new["a.txt"] == b"new" and "c.txt" not in new and new["mine.txt"] == b"mine"
    outcomes = []
    for stop in range(1, steps + 1):
        swap(0, "old", earlier)  # the earlier set in place again
        assert snapshot(out) == old
        killed = swap(stop, "new", later)
        assert killed.returncode == 137, killed.stderr
        remove_leftovers(out)  # what the next run does first
        after = snapshot(out)
        assert after in (old, new), (stop, sorted(after))
        outcomes.append("new" if after == new else "old")
    assert outcomes[0] == "old" and outcomes[-1] == "new"  # killed before any move, and after every one


# Signals and leftovers.

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_ends_the_run_cleanly(pair, tmp_path, signum, code):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    child = subprocess.Popen([sys.executable, "-m", "diffmorph", "morph", *map(str, pair), "-o", str(out),
                              "--steps", "2", "--size", "16", "--frames", "5000", "--format", "frames", "-q"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(PARTIAL in p.name for p in out.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)  # until it writes its partial outputs
    time.sleep(0.5)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code
    assert err.strip() == f"diffmorph: interrupted ({signal.Signals(signum).name}); no outputs were written"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_leftovers_of_a_killed_run_are_removed_by_the_next_and_only_those(pair, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)
    (out / f"{PARTIAL}-{gone}-0123abcd").mkdir()
    (out / f"{PARTIAL}-{gone}-0123abcd" / "morph.gif").write_text("half")
    (out / f"{PARTIAL}-{os.getppid()}-live").write_text("a running run's")  # its process is alive
    (out / f"{PARTIAL}-notes.txt").write_text("mine, whatever its name")
    assert run(["morph", *pair, "-o", out, *FAST, "--format", "gif"], capsys)[0] == 0
    names = {p.name for p in out.iterdir()}
    assert f"{PARTIAL}-{gone}-0123abcd" not in names
    assert {f"{PARTIAL}-{os.getppid()}-live", f"{PARTIAL}-notes.txt"} <= names


# Resources: ranges and budgets before any work.

@pytest.mark.parametrize(("flags", "message"), [
    (["--seed", str(2**64)], "--seed must be"),
    (["--frames", str(10**9)], "--frames must be"),
    (["--hold", "1e9"], "--hold must be"),
    (["--fps", "0.001", "--format", "gif"], "--fps must be"),
    (["--width", "100000"], "--width must be"),
    (["--size", "100000"], "--size must be"),
    (["--durations", "1e9"], "--durations must be"),
    (["--steps", "1e9"], "invalid int value"),
    (["--width", "16000"], "lower --width"),  # 16000 x 12000 pixels would need far more memory than is free
    (["--hold", "3000", "--fps", "240"], "over the limit of 100,000"),
])
def test_extreme_requests_are_refused_in_one_line(pair, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    started = time.monotonic()
    line = one_line(*run(["morph", *pair, "-o", out, *FAST[:-1], *flags, "-q"], capsys))
    assert message in line and not out.exists() and time.monotonic() - started < 20


def test_a_very_long_thin_image_is_refused_before_memory_is_spent(tmp_path, pair):
    thin = tmp_path / "thin.png"
    Image.fromarray(np.zeros((4, 20000, 3), np.uint8)).save(thin)
    # In a process of its own, to read its own peak memory: fitting the other image to a 20000 x 4 frame first
    # took over 14 GB.
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "morph", str(thin), str(pair[0]), "-o",
                           str(tmp_path / "out"), *FAST], capture_output=True, text=True, timeout=120)
    *lines, peak = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "over 16384 on a side" in lines[0]
    assert int(peak) < 2**30 and not (tmp_path / "out").exists()


# Special files, write errors, numerics.

def test_special_files_are_refused_at_once(pair, tmp_path, capsys):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for args, what in ((["morph", fifo, pair[1], "-o", tmp_path / "out", *FAST], "FIFO"),
                       (["morph", "/dev/zero", pair[1], "-o", tmp_path / "out", *FAST], "device"),
                       (["morph", tmp_path, pair[1], "-o", tmp_path / "out", *FAST], "folder"),
                       (["render", fifo, "-o", tmp_path / "out"], "FIFO"),
                       (["eval", fifo, *pair], "FIFO")):
        assert what in one_line(*run(args, capsys))


def test_a_file_size_limit_while_writing_gives_one_line_and_leaves_nothing(pair, tmp_path):
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    done = subprocess.run([sys.executable, "-m", "diffmorph", "morph", *map(str, pair), "-o", str(out),
                           "--steps", "2", "--size", "16", "--frames", "3", "--format", "gif", "-q"],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "File too large" in done.stderr and str(out) in done.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("colours", [("white", "black"), ("white", "white"), ("black", (0, 0, 0, 0))])
def test_blank_images_morph_like_any_other(tmp_path, capsys, colours):
    paths = []
    for index, colour in enumerate(colours):
        paths.append(tmp_path / f"{index}.png")
        Image.new("RGBA" if isinstance(colour, tuple) else "RGB", (24, 20), colour).save(paths[-1])
    for extra in ([], ["--align", "none", "--precision", "fp32", "--objective", "coarse-to-fine"]):
        code, err = run(["morph", *paths, "-o", tmp_path / f"out{len(extra)}", *FAST, *extra, "--format", "gif"],
                        capsys)
        assert code == 0, err


def test_non_finite_pixels_are_refused(tmp_path, capsys, pair):
    data = np.full((8, 8), 0.5, np.float32)
    data[2, 3] = np.nan
    Image.fromarray(data, mode="F").save(tmp_path / "nan.tiff")
    assert "NaN" in one_line(*run(["morph", tmp_path / "nan.tiff", pair[1], "-o", tmp_path / "out", *FAST], capsys))


# Maps files and eval.

def _maps(path: Path, maps: torch.Tensor, images: torch.Tensor, version: str = "2", **extra: str) -> None:
    metadata = {**extra, "format": "diffmorph.maps", "format_version": version, "diffmorph_version": "x",
                "config": json.dumps({}), "loop": "false",
                "sizes": json.dumps({"frame": [images.shape[-1], images.shape[-2]],
                                     "sources": [[images.shape[-1], images.shape[-2]]] * images.shape[0]}),
                "fit_seconds": json.dumps([1.0] * maps.shape[0])}
    save_file({"maps": maps, "images": images, "losses": torch.zeros(maps.shape[0], 3)}, str(path), metadata=metadata)


@pytest.mark.parametrize(("maps", "images", "message"), [
    (torch.zeros(1, 16, 84, 84), torch.zeros(2, 3, 1, 1, dtype=torch.uint16), "too small"),
    (torch.full((2, 16, 84, 84), float("nan")), torch.zeros(3, 3, 8, 8, dtype=torch.uint16), "NaN"),
    (torch.zeros(3, 16, 84, 84), torch.zeros(2, 3, 8, 8, dtype=torch.uint16), "segments"),
    (torch.zeros(1, 16, 84, 84), torch.zeros(2, 3, 8, 8, dtype=torch.float32), "shapes or types"),
])
def test_crafted_maps_files_are_refused(tmp_path, capsys, maps, images, message):
    path = tmp_path / "m.safetensors"
    _maps(path, maps, images)
    assert message in one_line(*run(["render", path, "-o", tmp_path / "out"], capsys))


@pytest.mark.parametrize("records", [
    [{"align": "auto", "move": {"scale": float("nan"), "shift": [0, 0], "confidence": 9, "angle": 0}, "bent": False,
      "subject": None, "line": None}],
    [{"align": "auto", "move": None, "bent": "yes", "subject": None, "line": None}],
    [{"align": "auto"}],
    ["aligned"],
    [],
])
def test_crafted_start_records_are_refused(tmp_path, capsys, records):
    path = tmp_path / "m.safetensors"
    _maps(path, torch.zeros(1, 16, 84, 84), torch.zeros(2, 3, 8, 8, dtype=torch.uint16),
          start_records=json.dumps(records))
    assert "corrupt" in one_line(*run(["render", path, "-o", tmp_path / "out"], capsys))


def test_a_maps_file_whose_header_claims_too_much(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    path.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    assert "corrupt" in one_line(*run(["render", path, "-o", tmp_path / "out"], capsys))


def test_eval_measures_the_smallest_animation_morph_writes(tmp_path, capsys):
    paths = []
    for index in range(2):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(blobs(4, 4, seed=index)).save(paths[-1])
    out = tmp_path / "out"
    assert run(["morph", *paths, "-o", out, "--steps", "2", "--size", "8", "--frames", "2", "--format", "gif",
                "mp4", "-q"], capsys)[0] == 0
    for animation in ("morph.gif", "morph.mp4"):
        code = main(["eval", str(out / animation), *map(str, paths), "--maps", str(out / "maps.safetensors"),
                     "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["frames"] == 2


# Anything at all: succeed, or one line, exit 1 or 2, and the folder as it was.

OPTIONS = {"--frames": st.integers(-5, 40) | st.just(10**6), "--fps": st.floats(-1, 60) | st.just(1e4),
           "--hold": st.floats(-1, 1) | st.just(1e9), "--width": st.integers(-10, 64) | st.just(40_000),
           "--size": st.integers(-10, 64) | st.just(5000), "--seed": st.integers(-1, 2**65),
           "--warp-scale": st.floats(-1, 2) | st.just(float("nan")), "--gif-width": st.integers(-5, 64),
           "--mode": st.sampled_from(["sharp", "classic", "bogus"])}


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.fixed_dictionaries({}, optional=OPTIONS), damage=st.sampled_from(["none", "truncate", "flip",
                                                                                       "empty"]))
def test_any_options_and_damaged_images(pair, tmp_path_factory, capsys, options, damage):
    folder = tmp_path_factory.mktemp("fuzz")
    image = folder / "a.png"
    data = pair[0].read_bytes()
    image.write_bytes({"none": data, "truncate": data[: len(data) // 3], "flip": data[:40] + bytes(
        b ^ 0xFF for b in data[40:80]) + data[80:], "empty": b""}[damage])
    out = folder / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    before = snapshot(out)
    flags = [str(part) for name, value in options.items() for part in (name, value)]
    code, err = run(["morph", image, pair[1], "-o", out, "--steps", "2", "--refine", "0", "-q", "--device", "cpu",
                     *(["--size", "16"] if "--size" not in options else []),
                     *(["--frames", "3"] if "--frames" not in options else []), *flags, "--format", "gif"], capsys)
    if code == 0:
        assert (out / "morph.gif").exists() and (out / "mine.txt").read_text() == "mine"
    else:
        one_line(code, err)
        assert snapshot(out) == before
