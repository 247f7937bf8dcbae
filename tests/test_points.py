"""Point hints: pairs of points the warp carries onto each other, from the API, the command line and eval."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import diffmorph
from diffmorph.errors import ConfigError
from diffmorph.io.images import Framing, fit_to_frame
from diffmorph.start.points import _framed, landing_errors, read_points
from memory import PEAK_SCRIPT

FAST = {"steps": 60, "size": 32, "refine": 10, "device": "cpu", "frames": 5}
SIDE = 64
# The striped disc of A on its left, and on B's right; B's left holds a plain look-alike, which an unguided fit
# takes for it (points in each image's pixels: the centre, the top, the right edge and the stripe's left end).
HINTS = np.array([[16, 32, 48, 28.8], [16, 24.3, 48, 21], [23.7, 32, 55.7, 28.8], [10, 32, 42, 28.8]])


def look_alike() -> list[np.ndarray]:
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE

    def disc(image, cy, cx, colour, stripe):
        inside = np.hypot(y - cy, x - cx) < 0.12
        image[inside] = colour
        if stripe:
            image[inside & (np.abs(y - cy) < 0.03)] = (0.95, 0.9, 0.3)

    a, b = (np.full((SIDE, SIDE, 3), (0.55, 0.7, 0.45)) for _ in range(2))
    disc(a, 0.5, 0.25, (0.8, 0.15, 0.1), True)
    disc(b, 0.5, 0.25, (0.75, 0.2, 0.15), False)
    disc(b, 0.45, 0.75, (0.8, 0.15, 0.1), True)
    return [(image * 255).round().astype(np.uint8) for image in (a, b)]


def in_fractions(points: np.ndarray) -> torch.Tensor:
    return torch.tensor([[(ay + 0.5) / SIDE, (ax + 0.5) / SIDE, (by + 0.5) / SIDE, (bx + 0.5) / SIDE]
                         for ax, ay, bx, by in points], dtype=torch.float32)


@pytest.fixture(scope="module")
def fits():
    pair = look_alike()
    return {hints: diffmorph.morph(pair, points=HINTS if hints else None, **FAST) for hints in (False, True)}


def test_four_hints_carry_each_point_onto_its_partner(fits):
    diagonal = np.hypot(SIDE, SIDE)
    for hints, result in fits.items():
        errors = landing_errors(result.segments[0].maps, in_fractions(HINTS), result.config.warp_scale, SIDE, SIDE)
        if hints:
            assert max(errors) < 0.02 * diagonal  # every hinted point within 2 % of the diagonal of its partner
        else:
            assert min(errors) > 0.15 * diagonal  # unguided: the look-alike
    start = fits[True].segments[0].start
    assert "4 point pair(s) pinned" in start.describe() and len(start.points) == 4


def test_hints_move_the_disc_not_the_ground(fits):
    # Mid-morph the striped disc is halfway across; unguided it stays on the left and loses its stripe.
    frames = {hints: result.renderer(0, "cpu", frames=5).at(0.5)[0] for hints, result in fits.items()}
    yellow = torch.tensor([0.9, 0.8, -0.4]).view(3, 1, 1)  # the stripe's colour in [-1, 1]
    stripe = {hints: ((frame - yellow).abs().amax(dim=0) < 0.25).nonzero().float() for hints, frame in frames.items()}
    assert len(stripe[True]) > 5 and 26 < stripe[True][:, 1].mean() < 38  # halfway from x = 16 to x = 48
    assert len(stripe[False]) == 0 or stripe[False][:, 1].mean() < 24


def test_no_hints_change_nothing():
    pair = look_alike()
    plain = diffmorph.morph(pair, steps=20, size=16, refine=0, device="cpu")
    none = diffmorph.morph(pair, points=[None], steps=20, size=16, refine=0, device="cpu")
    assert torch.equal(plain.segments[0].maps, none.segments[0].maps)


@pytest.mark.parametrize(("text", "message"), [
    ("x,y,u,v\n1,2,3,4\n", "line 1: the header must be ax,ay,bx,by"),
    ("ax,ay,bx,by\n1,2,3,4\n1,2,3\n", "line 3: give four numbers"),
    ("ax,ay,bx,by\n1,2,nan,4\n", "line 2: give four numbers"),
    ("ax,ay,bx,by\n", "has no points"),
])
def test_bad_points_files_name_their_line(tmp_path, text, message):
    path = tmp_path / "points.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_points(path)


def test_bad_hints_are_refused_before_any_work():
    pair = look_alike()
    with pytest.raises(ConfigError, match=r"pair 2: \(70, 3\) is outside B, which is 64 x 64 pixels"):
        diffmorph.morph(pair, points=np.array([[1, 2, 3, 4], [5, 6, 70, 3]]), **FAST)
    with pytest.raises(ConfigError, match="pairs 1 and 2 are less than a pixel apart on B"):
        diffmorph.morph(pair, points=np.array([[1, 2, 3, 4], [5, 6, 3.2, 4]]), **FAST)
    with pytest.raises(ConfigError, match="give point pairs as rows of ax, ay, bx, by"):
        diffmorph.morph(pair, points=np.array([[1, 2, 3]]), **FAST)
    with pytest.raises(ConfigError, match=r"each of the 2 segment\(s\)"):
        diffmorph.morph([*pair, pair[0]], points=[HINTS], **FAST)


@pytest.mark.parametrize("method", ["crop", "pad", "stretch"])
def test_a_point_lands_where_its_pixel_is_framed(method):
    # A bright pixel of a 48 x 96 image, fitted to a 64 x 64 frame: the hint's point follows it there.
    picture = np.zeros((96, 48, 3), np.float32)
    picture[70, 30] = 1.0
    framed, framing = fit_to_frame(picture, 64, 64, method, "black")
    assert isinstance(framing, Framing)
    x, y = _framed(np.array([30.0]), np.array([70.0]), framing)
    row, column = np.unravel_index(framed[..., 0].argmax(), framed.shape[:2])
    assert abs(x[0] - column) <= 1.0 and abs(y[0] - row) <= 1.0


def test_hints_from_the_command_line_and_eval(tmp_path):
    paths = []
    for name, image in zip("ab", look_alike(), strict=True):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    hints, bad = tmp_path / "hints.csv", tmp_path / "bad.csv"
    hints.write_text("ax,ay,bx,by\n" + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in HINTS))
    bad.write_text("ax,ay,bx,by\n1,2,3,4\n1,2,300,4\n")
    fast = ["--steps", "60", "--size", "32", "--refine", "10", "--frames", "5", "--format", "gif"]
    out = tmp_path / "out"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "diffmorph", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    done = run("morph", *paths, "-o", out, "--points", hints, *fast)
    assert done.returncode == 0, done.stderr
    assert "4 point pair(s) pinned" in done.stderr
    measured = run("eval", out / "morph.gif", *paths, "--maps", out / "maps.safetensors", "--json")
    assert measured.returncode == 0, measured.stderr
    assert json.loads(measured.stdout)["hint_error_px"] < 0.02 * np.hypot(SIDE, SIDE)
    failed = run("morph", *paths, "-o", tmp_path / "other", "--points", bad, *fast)
    assert failed.returncode == 1 and "pair 2: (300, 4) is outside B" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_a_point_outside_an_image_is_refused_before_the_images_are_decoded(tmp_path):
    # Two 6000 x 6000 images (each over 400 MB once decoded) and a point beyond B's side: told from the files'
    # headers, in a process of its own to read its own peak memory.
    paths = []
    for name in "ab":
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(np.zeros((6000, 6000, 3), np.uint8)).save(paths[-1])
    hints = tmp_path / "hints.csv"
    hints.write_text("ax,ay,bx,by\n10,10,6500,10\n")
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "morph", *map(str, paths), "-o", str(tmp_path / "out"),
                           "--points", str(hints)], capture_output=True, text=True, timeout=120)
    *lines, peak = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "(6500, 10) is outside B, which is 6000 x 6000" in lines[0]
    assert int(peak) < 700 * 2**20 and not (tmp_path / "out").exists()
