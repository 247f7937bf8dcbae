import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffmorph.cli import main
from diffmorph.pipeline import load_maps
from synthetic import MOSS, RED, SAND, YELLOW, ball, blobs

FAST = ["--steps", "3", "--refine", "2", "--size", "32", "--frames", "4", "--device", "cpu"]


def run(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code, err, outdir: Path):
    assert code not in (0, None)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    assert not outdir.exists() or not any(outdir.iterdir())


@pytest.mark.parametrize("command", [[], ["morph"], ["render"], ["demo"]])
def test_help(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0 and "usage: diffmorph" in out


def test_help_lists_every_method_flag(capsys):
    _, out, _ = run(["morph", "--help"], capsys)
    for flag in ("--steps", "--refine", "--lr", "--size", "--warp-scale", "--mult-scale", "--add-scale", "--add-first",
                 "--frames", "--fps", "--seed", "--device", "--mode", "--format", "--quiet", "--fit"):
        assert flag in out


def test_help_groups_the_options(capsys):
    _, out, _ = run(["morph", "--help"], capsys)
    headings = [line for line in out.splitlines() if line.endswith("options:")]
    assert headings == ["options:", "input and output options:", "fit options:", "start options:",
                        "frames and timing options:", "encoding options:", "expert options:"]
    groups = out.split("\n\n")
    start = next(group for group in groups if group.startswith("start options:"))
    assert "--align" in start and "--steps" not in start


def test_readme_options_table_is_the_cli_s(capsys):
    from diffmorph.options import options_markdown

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert options_markdown() in readme, "run: python scripts/options_table.py"


def test_console_script_and_module_entry_points():
    script = Path(sys.executable).with_name("diffmorph")
    commands = [[sys.executable, "-m", "diffmorph", "--version"]]
    if script.exists():
        commands.append([str(script), "--version"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.startswith("diffmorph ")


def test_morph_then_render_end_to_end(image_files, tmp_path, capsys):
    a, b = image_files
    out = tmp_path / "out"
    code, _, err = run(["morph", a, b, "-o", out, *FAST, "--format", "mp4,frames"], capsys)
    assert code == 0, err
    assert "B matches A's 48 x 40 frame" in err and "wrote 8 outputs" in err
    with av.open(str(out / "morph.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(list((out / "frames").iterdir())) == 4
    assert not (out / "morph.gif").exists()

    again = tmp_path / "again"
    code, _, err = run(["render", out / "maps.safetensors", "-o", again, "--frames", "7", "--format", "gif", "webp",
                        "-q"], capsys)
    assert code == 0 and err == ""
    for name in ("morph.gif", "morph.webp"):
        with Image.open(again / name) as image:
            assert image.n_frames == 7 and image.size == (48, 40)
    started = [json.loads((folder / "config.json").read_text())["fit"][0]["start"] for folder in (out, again)]
    assert started[0] is not None and started[1] == started[0]  # the maps file keeps where the warp started


def test_inputs_of_different_sizes_are_fitted_and_logged(tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(blobs(40, 60, seed=1)).save(a)
    Image.fromarray(blobs(50, 50, seed=2)).save(b)
    threads = torch.get_num_threads()
    code, _, err = run(["morph", a, b, "-o", tmp_path / "out", *FAST, "--fit", "pad", "--format", "gif",
                        "--threads", "1"], capsys)
    assert code == 0
    assert "B (50 x 50) fitted to A's 60 x 40 frame" in err and "--fit pad" in err
    assert Image.open(tmp_path / "out" / "morph.gif").size == (60, 40)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["config"]["threads"] == 1
    assert torch.get_num_threads() == threads  # set for the morph only


def test_demo(tmp_path, capsys):
    code, _, err = run(["demo", "-o", tmp_path / "demo", *FAST, "--format", "mp4"], capsys)
    assert code == 0, err
    with av.open(str(tmp_path / "demo" / "morph.mp4")) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (480, 360)


def _truncated(path: Path) -> None:
    Image.fromarray(blobs(64, 64)).save(path)
    path.write_bytes(path.read_bytes()[:300])


def _zero_size(path: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize(("prepare", "extra", "message"), [
    (lambda p: None, [], "no such file"),
    (lambda p: p.write_text("not an image"), [], "not an image"),
    (_truncated, [], "truncated"),
    (lambda p: Image.fromarray(blobs(64, 64)).save(p), ["--max-pixels", "1000"], "over the limit"),
    (_zero_size, [], "zero size"),
])
def test_bad_source_images(tmp_path, capsys, image_files, prepare, extra, message):
    bad = tmp_path / "bad.png"
    prepare(bad)
    out = tmp_path / "out"
    code, _, err = run(["morph", bad, image_files[1], "-o", out, *FAST, *extra], capsys)
    assert_clean_failure(code, err, out)
    assert message in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--refine", "-1"], "--refine must be 0 (none) or a positive number of steps"),
    (["--frames", "0"], "--frames must be"),
    (["--fps", "-5"], "--fps must be a positive number"),
    (["--fps", "0"], "--fps must be a positive number"),
    (["--device", "gpu"], "unknown device"),
    (["--steps", "abc"], "invalid int value"),
    (["--format", "avi"], "unknown format"),
    (["--background", "nope"], "unknown colour"),
    (["--threads", "-1"], "--threads must be 0 (idle cores) or a number of threads"),
])
def test_bad_settings(tmp_path, capsys, image_files, flags, message):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, *FAST, *flags], capsys)
    assert_clean_failure(code, err, out)
    assert message in err


def test_output_path_occupied_by_a_file(tmp_path, capsys, image_files):
    occupied = tmp_path / "taken"
    occupied.write_text("mine")
    code, _, err = run(["morph", *image_files, "-o", occupied, *FAST], capsys)
    assert code == 1 and "is a file" in err and occupied.read_text() == "mine"
    code, _, err = run(["morph", *image_files, "-o", occupied / "sub", *FAST], capsys)
    assert_clean_failure(code, err, occupied / "sub")


def test_unwritable_output_folder(tmp_path, capsys, image_files):
    locked = Path("/proc/diffmorph-out")  # writable by nobody, root included
    code, _, err = run(["morph", *image_files, "-o", locked, *FAST], capsys)
    assert_clean_failure(code, err, locked)
    assert "cannot" in err


def test_a_learning_rate_out_of_range_is_refused_before_work(tmp_path, capsys, image_files):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, "--steps", "40", "--size", "32", "--lr", "1e12", "-q"],
                       capsys)
    assert_clean_failure(code, err, out)
    assert "--lr must be a positive number up to 1" in err


def test_a_diverging_fit_says_so(tmp_path):
    # Within the options' ranges the spike guard keeps the fit finite; a non-finite loss still ends in one line.
    from diffmorph.config import MorphConfig
    from diffmorph.errors import FitDivergedError
    from diffmorph.optimize import fit_maps

    a = torch.zeros(1, 3, 16, 16)
    b = torch.full((1, 3, 16, 16), float("inf"))
    with pytest.raises(FitDivergedError, match=r"diverged.*lower --lr"):
        fit_maps(a, b, MorphConfig(size=16, steps=3, align="none").validate(), torch.device("cpu"))


def test_corrupt_and_incompatible_maps_files(tmp_path, capsys):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code, _, err = run(["render", corrupt, "-o", out], capsys)
    assert_clean_failure(code, err, out)
    assert "corrupt" in err

    future = tmp_path / "future.safetensors"
    save_file({"maps": __import__("torch").zeros(1)}, str(future),
              metadata={"format": "diffmorph.maps", "format_version": "3", "diffmorph_version": "3.0"})
    code, _, err = run(["render", future, "-o", out], capsys)
    assert_clean_failure(code, err, out)
    assert "format version 3" in err and "upgrade diffmorph" in err

    code, _, err = run(["render", tmp_path / "missing.safetensors", "-o", out], capsys)
    assert_clean_failure(code, err, out)


def test_render_refuses_bad_settings_before_loading(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["render", tmp_path / "whatever.safetensors", "-o", out, "--frames", "1"], capsys)
    assert_clean_failure(code, err, out)
    assert "--frames must be" in err


def test_hold_and_ease_on_morph_and_render(image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, *FAST, "--hold", "0.5", "--fps", "10", "--ease", "in-out",
                        "--format", "frames", "-q"], capsys)
    assert code == 0, err
    frames = sorted((out / "frames").iterdir())
    assert len(frames) == 4 + 2 * 5  # 4 morph frames and 5 held frames (0.5 s at 10 fps) at each end
    first = [np.asarray(Image.open(p)) for p in frames[:6]]
    assert all(np.array_equal(first[0], f) for f in first[1:6])  # A held, then the morph's own first frame
    again = tmp_path / "again"
    code, _, err = run(["render", out / "maps.safetensors", "-o", again, "--hold", "0", "--ease", "linear",
                        "--format", "frames", "-q"], capsys)
    assert code == 0 and len(list((again / "frames").iterdir())) == 4
    code, _, err = run(["render", out / "maps.safetensors", "-o", tmp_path / "x", "--ease", "bounce"], capsys)
    assert code == 2 and "invalid choice" in err
    code, _, err = run(["render", out / "maps.safetensors", "-o", tmp_path / "x", "--hold", "-1"], capsys)
    assert_clean_failure(code, err, tmp_path / "x")


def test_gif_width_caps_only_the_gif(image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, *FAST, "--gif-width", "24", "--format", "gif", "frames",
                        "-q"], capsys)
    assert code == 0, err
    with Image.open(out / "morph.gif") as gif:
        assert gif.size == (24, 20) and gif.n_frames == 4
    assert Image.open(sorted((out / "frames").iterdir())[0]).size == (48, 40)
    code, _, err = run(["render", out / "maps.safetensors", "-o", tmp_path / "wide", "--gif-width", "100",
                        "--format", "gif", "-q"], capsys)
    assert code == 0 and Image.open(tmp_path / "wide" / "morph.gif").size == (48, 40)  # never upscaled
    code, _, err = run(["morph", *image_files, "-o", tmp_path / "bad", *FAST, "--gif-width", "-3"], capsys)
    assert_clean_failure(code, err, tmp_path / "bad")
    assert "--gif-width must be" in err


def test_width_scales_every_output(image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, *FAST, "--width", "24", "--format", "mp4", "frames",
                        "flow", "-q"], capsys)
    assert code == 0, err
    for name in ("a_to_b.png", "b_to_a.png", "frames/frame_00000.png", "flow_a_to_b.png"):
        assert Image.open(out / name).size == (24, 20)
    assert np.load(out / "flow_b_to_a.npy").shape == (20, 24, 2)
    with av.open(str(out / "morph.mp4")) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (24, 20)
    again = tmp_path / "again"
    code, _, err = run(["render", out / "maps.safetensors", "-o", again, "--width", "0", "--format", "frames", "-q"],
                       capsys)
    assert code == 0 and Image.open(again / "frames" / "frame_00000.png").size == (48, 40)  # the maps file keeps all
    code, _, err = run(["morph", *image_files, "-o", tmp_path / "bad", *FAST, "--width", "2"], capsys)
    assert_clean_failure(code, err, tmp_path / "bad")


def test_render_switches_mode_and_pacing_without_fitting(image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["morph", *image_files, "-o", out, *FAST, "--frames", "9", "--format", "frames", "-q"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["mode"] == "sharp"
    renders = {}
    for mode, pacing in (("sharp", "auto"), ("classic", "linear"), ("classic", "even")):
        folder = tmp_path / f"{mode}-{pacing}"
        code, _, err = run(["render", out / "maps.safetensors", "-o", folder, "--mode", mode, "--pacing", pacing,
                            "--format", "frames", "-q"], capsys)
        assert code == 0, err
        config = json.loads((folder / "config.json").read_text())["config"]
        assert (config["mode"], config["pacing"]) == (mode, pacing)
        renders[mode, pacing] = [np.asarray(Image.open(p)) for p in sorted((folder / "frames").iterdir())]
    sharp, classic, even = renders.values()
    assert all(np.array_equal(f, g) for f, g in zip(sharp, [np.asarray(Image.open(p)) for p in
                                                            sorted((out / "frames").iterdir())], strict=True))
    for frames in (classic, even):
        assert np.array_equal(frames[0], sharp[0]) and np.array_equal(frames[-1], sharp[-1])
    assert not np.array_equal(classic[4], sharp[4]) and not np.array_equal(classic[4], even[4])
    code, _, err = run(["render", out / "maps.safetensors", "-o", tmp_path / "x", "--mode", "fancy"], capsys)
    assert code == 2 and "invalid choice" in err


def test_objective_reaches_the_fit_and_is_recorded(image_files, tmp_path, capsys):
    maps = {}
    for objective in ("classic", "coarse-to-fine"):
        out = tmp_path / objective
        code, _, err = run(["morph", *image_files, "-o", out, *FAST, "--steps", "20", "--objective", objective,
                            "--format", "frames", "-q"], capsys)  # 3 steps at the peak rate spike back to the start
        assert code == 0, err
        assert json.loads((out / "config.json").read_text())["config"]["objective"] == objective
        maps[objective] = load_maps(out / "maps.safetensors").segments[0].maps
    assert not torch.equal(maps["classic"], maps["coarse-to-fine"])  # same seed and steps: only the loss differs
    code, _, err = run(["morph", *image_files, "-o", tmp_path / "bad", *FAST, "--objective", "fine"], capsys)
    assert code == 2 and "invalid choice" in err


def test_align_reaches_the_fit_is_reported_and_recorded(tmp_path, capsys):
    # B is A's textured scene moved 10 px right and 5 px down: auto alignment finds it and says so.
    noisy = blobs(64, 64, seed=4) + np.random.default_rng(4).normal(0, 50, (64, 64, 1))
    scene = np.clip(noisy, 0, 255).astype(np.uint8)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(scene).save(a)
    Image.fromarray(np.roll(scene, (5, 10), axis=(0, 1))).save(b)
    maps = {}
    for align in ("auto", "global", "local", "none"):
        out = tmp_path / align
        code, _, err = run(["morph", a, b, "-o", out, *FAST, "--align", align, "--format", "frames"], capsys)
        assert code == 0, err
        assert ("aligned: B is A moved 16 % right and 8 % down" in err) == (align != "none")
        assert ("then bent region by region" in err) == (align == "local")  # auto: the move explains the pair
        assert json.loads((out / "config.json").read_text())["config"]["align"] == align
        maps[align] = load_maps(out / "maps.safetensors").segments[0].maps
    flow_dx = maps["global"][7].mean() * 0.05 * 64  # A->B, pixels: the fit started from the move
    assert abs(flow_dx - 10) < 2 and abs(maps["none"][7].mean() * 0.05 * 64) < 2
    assert torch.equal(maps["auto"], maps["global"])
    assert abs(maps["local"][7].mean() * 0.05 * 64 - 10) < 2  # local starts from the same move, then bends it
    assert not torch.equal(maps["local"], maps["global"])
    # The start is stored with the maps: a render without fitting tells it and records it again.
    again = tmp_path / "again"
    code, _, err = run(["render", tmp_path / "global" / "maps.safetensors", "-o", again, "--format", "gif"], capsys)
    assert code == 0 and "aligned: B is A moved 16 % right and 8 % down" in err
    (fitted,) = json.loads((again / "config.json").read_text())["fit"]
    assert fitted["start"] == "aligned: B is A moved 16 % right and 8 % down"
    start = load_maps(again / "maps.safetensors").segments[0].start
    assert start.align == "global" and start.move.shift == pytest.approx((5 / 64, 10 / 64), abs=1 / 64)
    code, _, err = run(["morph", a, b, "-o", tmp_path / "bad", *FAST, "--align", "bent"], capsys)
    assert code == 2 and "invalid choice" in err


def test_align_subject_carries_the_subject_or_says_there_is_none(image_files, tmp_path, capsys):
    a, b = tmp_path / "ball_a.png", tmp_path / "ball_b.png"
    balls = (ball((0.3, 0.3), 0.12, RED, SAND, seed=1), ball((0.65, 0.7), 0.15, YELLOW, MOSS, seed=2))
    for path, image in zip((a, b), balls, strict=True):
        Image.fromarray(((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(path)
    for align in ("subject", "auto"):  # auto: no move, and bending does not make the grounds agree
        out = tmp_path / align
        code, _, err = run(["morph", a, b, "-o", out, *FAST, "--align", align, "--format", "frames"], capsys)
        assert code == 0, err
        assert "aligned: the subject moves 40 % right and 35 % down, 1.2x larger" in err
        assert json.loads((out / "config.json").read_text())["config"]["align"] == align
    code, _, err = run(["morph", *image_files, "-o", tmp_path / "none", *FAST, "--align", "subject"], capsys)
    assert code == 0 and "aligned: no one subject stands out of both images alike" in err


@pytest.mark.parametrize(("flags", "message"), [(["--port", "0"], "--port must be"),
                                                (["--device", "gpu"], "unknown device"),
                                                (["--max-disk-gb", "0"], "--max-disk-gb must be positive")])
def test_ui_refuses_bad_settings_in_one_line(flags, message, capsys):
    code, _, err = run(["ui", *flags], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_version_and_help_start_without_the_heavy_libraries():
    # torch and OpenCV take a second or more to import: the CLI answers --version and --help without them.
    code = ("import runpy, sys\n"
            "for argv in (['diffmorph', '--version'], ['diffmorph', 'morph', '--help']):\n"
            "    sys.argv = argv\n"
            "    try:\n"
            "        runpy.run_module('diffmorph', run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(name for name in ('torch', 'cv2') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
