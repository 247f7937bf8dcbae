import itertools

import numpy as np
import pytest
import torch

from diffmorph.api import MorphResult, render
from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.io.images import to_tensor
from diffmorph.renderer import frame_times, to_uint8
from synthetic import blobs


def result_for(height: int, width: int) -> MorphResult:
    generator = torch.Generator().manual_seed(0)
    a = to_tensor(blobs(height, width, seed=1) / 255.0)
    b = to_tensor(blobs(height, width, seed=2) / 255.0)
    return MorphResult(maps=torch.randn(16, 84, 84, generator=generator) * 0.3, image_a=a, image_b=b,
                       config=MorphConfig(frames=7, device="cpu"), losses=[0.1])


def test_frame_times():
    assert frame_times(2) == [0.0, 1.0]
    assert frame_times(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least 2"):
        frame_times(1)


@pytest.mark.parametrize(("height", "width"), [(24, 40), (41, 17)])
def test_frames_keep_the_native_size_and_exact_endpoints(height, width):
    result = result_for(height, width)
    frames = list(render(result))
    assert len(frames) == 7
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], to_uint8(result.image_a))
    assert np.array_equal(frames[-1], to_uint8(result.image_b))
    middle = frames[3].astype(int)
    assert np.abs(middle - frames[0]).mean() > 1 and np.abs(middle - frames[-1]).mean() > 1


def test_frames_argument_overrides_the_config():
    assert len(list(render(result_for(16, 16), frames=3))) == 3
    with pytest.raises(ConfigError, match="--frames"):
        render(result_for(16, 16), frames=1)


def test_rendering_from_a_maps_file_is_bit_identical(tmp_path):
    result = result_for(20, 28)
    result.save(tmp_path / "m.safetensors")
    again = MorphResult.load(tmp_path / "m.safetensors")
    for first, second in zip(render(result), render(again), strict=True):
        assert np.array_equal(first, second)


def test_neutral_maps_render_a_cross_dissolve():
    result = result_for(16, 16)
    result.maps = torch.zeros(16, 84, 84)
    middle = list(render(result, frames=3))[1].astype(float)
    expected = (to_uint8(result.image_a).astype(float) + to_uint8(result.image_b)) / 2
    assert np.abs(middle - expected).max() <= 1.0


@pytest.mark.parametrize("add_first", [False, True])
def test_renderer_matches_the_reference_formula(add_first):
    from diffmorph.ops import MapScales, blend_frame, resize
    from diffmorph.renderer import Renderer

    result = result_for(30, 22)
    scales = MapScales(add_first=add_first)
    renderer = Renderer(result.maps, result.image_a, result.image_b, scales, torch.device("cpu"))
    full = resize(result.maps.unsqueeze(0), 30, 22)
    for t in (0.0, 0.3, 1.0):
        expected = blend_frame(result.image_a, result.image_b, full[:, :8], full[:, 8:], t, scales)
        torch.testing.assert_close(renderer.frame(t), expected, atol=1e-5, rtol=0)


def test_fully_applied_maps_match_apply_maps():
    from diffmorph.ops import MapScales, apply_maps, resize
    from diffmorph.renderer import Renderer

    result = result_for(18, 26)
    renderer = Renderer(result.maps, result.image_a, result.image_b, MapScales(), torch.device("cpu"))
    full = resize(result.maps.unsqueeze(0), 18, 26)
    expected_ab = apply_maps(result.image_a, full[:, :8], MapScales()).clamp(-1, 1)
    expected_ba = apply_maps(result.image_b, full[:, 8:], MapScales()).clamp(-1, 1)
    torch.testing.assert_close(renderer.a_to_b(), expected_ab, atol=1e-5, rtol=0)
    torch.testing.assert_close(renderer.b_to_a(), expected_ba, atol=1e-5, rtol=0)


@pytest.mark.parametrize("curve", ["linear", "in", "out", "in-out"])
def test_easing_keeps_the_endpoints_and_is_monotonic(curve):
    from diffmorph.renderer import ease

    values = [ease(t, curve) for t in frame_times(21)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_timeline_holds_and_eases():
    from diffmorph.renderer import timeline

    times = timeline(5, fps=10, curve="in", hold=0.25)  # round(2.5) = 2 held frames at each end
    assert times == [0.0, 0.0, 0.0, 0.0625, 0.25, 0.5625, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown ease"):
        timeline(5, fps=10, curve="bounce")


def test_render_follows_the_configured_ease_and_hold():
    import dataclasses

    result = result_for(16, 16)
    result.config = dataclasses.replace(result.config, ease="in-out", hold=0.1, fps=20)
    frames = list(render(result, frames=5))
    assert len(frames) == 5 + 2 * 2
    assert np.array_equal(frames[0], frames[2]) and np.array_equal(frames[-1], frames[-3])
    assert np.array_equal(frames[2], to_uint8(result.image_a)) and np.array_equal(frames[-1], to_uint8(result.image_b))
