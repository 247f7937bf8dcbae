"""The perceptual path and the warp melt of ``diffmorph eval``: they rank paths and warps as a viewer would."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffmorph.cli import main
from diffmorph.evaluate import MeltParams, evaluate, warp_melt
from diffmorph.ops import MapScales, warp
from diffmorph.perceptual import MissingExtraError, PerceptualPath, metric, weights_path
from synthetic import blobs

try:
    weights_path()
    HAVE_EXTRA = True
except MissingExtraError:
    HAVE_EXTRA = False
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the [eval] extra (stlpips-pytorch) is not installed")


def path_length(frames: list[np.ndarray]) -> float:
    meter = PerceptualPath()
    for frame in frames:
        meter.add(frame)
    return sum(meter.finish())


def as_image(tensor: torch.Tensor) -> np.ndarray:
    return ((tensor[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


def swirl(size: int, strength: float) -> torch.Tensor:
    """A whirl about the centre, ``strength`` pixels at most: (1, 2, S, S) flow (dy, dx)."""
    ys, xs = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    radius = torch.hypot(ys, xs) / (size / 2)
    turn = strength * torch.exp(-4 * radius**2) * (1 - radius).clamp(min=0) * 4
    return torch.stack((xs / (size / 2) * turn, -ys / (size / 2) * turn))[None]


def pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    return blobs(size, size, seed=1), blobs(size, size, seed=5)


@needs_extra
def test_the_network_and_its_batches_agree():
    a, b = pair()
    frames = [((1 - t) * a + t * b).round().astype(np.uint8) for t in np.linspace(0, 1, 11)]
    batched = PerceptualPath(batch=4)
    for frame in frames:
        batched.add(frame)
    steps = batched.finish()
    one = [float(batched.network.distance(as_tensor(x), as_tensor(y))) for x, y in itertools.pairwise(frames)]
    assert len(steps) == 10 and np.allclose(steps, one, atol=1e-5)
    assert float(batched.network.distance(as_tensor(a), as_tensor(a))) == 0.0


@needs_extra
def test_a_jittered_path_is_longer_than_a_clean_one():
    a, b = pair()
    times = np.linspace(0, 1, 21)
    clean = [((1 - t) * a + t * b).round().astype(np.uint8) for t in times]
    rng = np.random.default_rng(0)
    jittered = [clean[0], *[np.roll(f, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) for f in clean[1:-1]], clean[-1]]
    assert path_length(jittered) > 1.5 * path_length(clean)


@needs_extra
def test_a_crossfade_is_shorter_than_a_swirl_through_the_middle():
    a, b = pair()
    ta, tb = as_tensor(a), as_tensor(b)
    times = np.linspace(0, 1, 21)
    crossfade = [as_image(torch.lerp(ta, tb, float(t))) for t in times]
    swirled = [as_image(warp(torch.lerp(ta, tb, float(t)), swirl(64, 12 * np.sin(np.pi * t)))) for t in times]
    assert path_length(swirled) > 1.2 * path_length(crossfade)


def test_warp_melt_is_zero_for_an_affine_warp_and_large_for_a_swirl():
    size, scales = 84, MapScales()
    a, b = (as_tensor(x) for x in pair(96))
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    maps = torch.zeros(16, size, size)
    maps[6], maps[7] = 0.3 * xs + 0.2, -0.2 * ys + 0.1 * xs  # zoom, shear and shift: affine, in map units
    assert warp_melt(maps, a, b, scales) == pytest.approx(0.0, abs=1e-3)
    maps[6:8] = swirl(size, 8.0)[0] / (size * scales.warp)
    maps[14:16] = -maps[6:8]
    assert warp_melt(maps, a, b, scales) > 0.1
    # The same swirl counts less where the images agree: A against itself.
    assert warp_melt(maps, a, a, scales, MeltParams()) < warp_melt(maps, a, b, scales)


def crossfade_folder(tmp_path) -> Path:
    """Five PNG frames of a crossfade in tmp_path/frames, and its images as tmp_path/a.png and b.png."""
    a, b = pair()
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, t in enumerate(np.linspace(0, 1, 5)):
        Image.fromarray(((1 - t) * a + t * b).round().astype(np.uint8)).save(folder / f"frame_{index:05d}.png")
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    return folder


@pytest.fixture
def without_extra(monkeypatch):
    metric.cache_clear()  # a network loaded by an earlier test would hide the missing wheel
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    yield
    metric.cache_clear()


def test_a_missing_extra_is_one_line(tmp_path, without_extra, capsys):
    with pytest.raises(MissingExtraError, match=r"pip install 'diffmorph\[eval\]'"):
        weights_path()
    folder = crossfade_folder(tmp_path)
    assert evaluate(folder, tmp_path / "a.png", tmp_path / "b.png").perceptual_path is None
    with pytest.raises(MissingExtraError):
        evaluate(folder, tmp_path / "a.png", tmp_path / "b.png", perceptual=True)
    assert main(["eval", str(folder), str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and "[eval]" in captured.err
    assert "perceptual_path" not in captured.out and "pacing_cv" in captured.out


@needs_extra
def test_eval_prints_the_perceptual_path_and_the_melt(tmp_path, capsys):
    folder = crossfade_folder(tmp_path)
    assert main(["eval", str(folder), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["perceptual_path"] > 0 and values["perceptual_step_cv"] >= 0
    assert values["warp_melt"] is None  # it needs the maps


@needs_extra
def test_tiny_and_thin_frames_are_measured():
    for shape in ((4, 4, 3), (3, 300, 3)):
        meter = PerceptualPath()
        for value in (0, 128, 255):
            meter.add(np.full(shape, value, np.uint8))
        steps = meter.finish()
        assert len(steps) == 2 and all(step > 0 for step in steps)
