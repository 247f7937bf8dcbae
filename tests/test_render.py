import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffmorph.config import MorphConfig
from diffmorph.demo import demo_pair
from diffmorph.errors import ConfigError
from diffmorph.evaluate import laplacian_energy, pacing, rmse
from diffmorph.io.images import to_tensor
from diffmorph.ops import MapScales, warp
from diffmorph.pipeline import MorphResult, render
from diffmorph.render import Renderer, frame_times, to_uint8
from synthetic import MOSS, RED, SAND, YELLOW, ball, blobs, pair_result


def result_for(height: int, width: int) -> MorphResult:
    generator = torch.Generator().manual_seed(0)
    a = to_tensor(blobs(height, width, seed=1) / 255.0)
    b = to_tensor(blobs(height, width, seed=2) / 255.0)
    maps = torch.randn(16, 84, 84, generator=generator) * 0.3
    return pair_result(a, b, MorphConfig(frames=7, device="cpu"), maps=maps)


def test_frame_times():
    assert frame_times(2) == [0.0, 1.0]
    assert frame_times(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least 2"):
        frame_times(1)


def test_a_frame_becomes_its_nearest_levels_in_either_layout():
    # Frames are channels-last on a CPU, which OpenCV converts; other tensors go through torch. Both round to
    # the nearest level and saturate; only a value within rounding of a tie may land on the other level.
    image = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    levels = image.add(1.0).mul(127.5)
    expected = levels.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    near_tie = ((levels - levels.floor() - 0.5).abs() < 1e-3)[0].permute(1, 2, 0).numpy()
    for layout in (torch.contiguous_format, torch.channels_last):
        frame = to_uint8(image.contiguous(memory_format=layout))
        assert frame.shape == (37, 29, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame[~near_tie], expected[~near_tie])
        assert np.abs(frame.astype(int) - expected).max() <= 1
    assert (expected == 0).any() and (expected == 255).any()  # both ends were saturated


@pytest.mark.parametrize("mode", ["sharp", "classic"])
@pytest.mark.parametrize(("height", "width"), [(24, 40), (41, 17)])
def test_frames_keep_the_native_size_and_exact_endpoints(height, width, mode):
    result = result_for(height, width)
    result.config = MorphConfig(frames=7, device="cpu", mode=mode)
    frames = list(render(result))
    assert len(frames) == 7
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], to_uint8(result.images[0]))
    assert np.array_equal(frames[-1], to_uint8(result.images[1]))
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


def test_neutral_maps_render_a_cross_dissolve_in_classic_mode():
    result = result_for(16, 16)
    result.config = MorphConfig(frames=3, device="cpu", mode="classic")
    result.segments[0].maps = torch.zeros(16, 84, 84)
    middle = list(render(result, frames=3))[1].astype(float)
    expected = (to_uint8(result.images[0]).astype(float) + to_uint8(result.images[1])) / 2
    assert np.abs(middle - expected).max() <= 1.0


@pytest.mark.parametrize("add_first", [False, True])
def test_renderer_matches_the_reference_formula(add_first):
    from diffmorph.ops import MapScales, blend_frame, resize
    from diffmorph.render import Renderer

    result = result_for(30, 22)
    scales = MapScales(add_first=add_first)
    renderer = Renderer(result.segments[0].maps, *result.images, scales, torch.device("cpu"), mode="classic",
                        pacing="linear")
    full = resize(result.segments[0].maps.unsqueeze(0), 30, 22)
    for t in (0.0, 0.3, 1.0):
        expected = blend_frame(*result.images, full[:, :8], full[:, 8:], t, scales)
        torch.testing.assert_close(renderer.frame(t), expected, atol=1e-5, rtol=0)


def test_fully_applied_maps_match_apply_maps():
    from diffmorph.ops import MapScales, apply_maps, resize
    from diffmorph.render import Renderer

    result = result_for(18, 26)
    renderer = Renderer(result.segments[0].maps, *result.images, MapScales(), torch.device("cpu"))
    full = resize(result.segments[0].maps.unsqueeze(0), 18, 26)
    expected_ab = apply_maps(result.images[0], full[:, :8], MapScales()).clamp(-1, 1)
    expected_ba = apply_maps(result.images[1], full[:, 8:], MapScales()).clamp(-1, 1)
    mapped = renderer.fully_mapped()
    torch.testing.assert_close(mapped[0:1], expected_ab, atol=1e-5, rtol=0)
    torch.testing.assert_close(mapped[1:2], expected_ba, atol=1e-5, rtol=0)


@pytest.mark.parametrize("curve", ["linear", "in", "out", "in-out"])
def test_easing_keeps_the_endpoints_and_is_monotonic(curve):
    from diffmorph.render import ease

    values = [ease(t, curve) for t in frame_times(21)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_timeline_holds_and_eases():
    from diffmorph.render import timeline

    times = timeline([5], fps=10, curve="in", hold=0.25)  # round(2.5) = 2 held frames at each end
    assert [t for _, t in times] == [0.0, 0.0, 0.0, 0.0625, 0.25, 0.5625, 1.0, 1.0, 1.0]
    assert {segment for segment, _ in times} == {0}
    with pytest.raises(ValueError, match="unknown ease"):
        timeline([5], fps=10, curve="bounce")


def test_render_follows_the_configured_ease_and_hold():
    import dataclasses

    result = result_for(16, 16)
    result.config = dataclasses.replace(result.config, ease="in-out", hold=0.1, fps=20)
    frames = list(render(result, frames=5))
    assert len(frames) == 5 + 2 * 2
    assert np.array_equal(frames[0], frames[2]) and np.array_equal(frames[-1], frames[-3])
    assert np.array_equal(frames[2], to_uint8(result.images[0]))
    assert np.array_equal(frames[-1], to_uint8(result.images[1]))


def textured_motion_pair(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A with fine texture; B is A moved by (4, -5) px and recoloured: real motion plus a colour change."""
    rng = np.random.default_rng(3)
    texture = np.clip(blobs(size, size, seed=3) + rng.normal(0, 25, (size, size, 1)), 0, 255)
    a = to_tensor(texture / 255.0)
    flow = torch.tensor([4.0, -5.0]).view(1, 2, 1, 1).expand(1, 2, size, size)
    b = (warp(a, flow) * torch.tensor([0.7, 1.0, 1.2]).view(1, 3, 1, 1) + 0.1).clamp(-1, 1)
    return a, to_tensor(to_uint8(b) / 255.0)  # B on exact grey levels, as a decoded image would be


@pytest.fixture(scope="module")
def fitted_motion() -> MorphResult:
    a, b = textured_motion_pair()
    return pair_result(a, b, MorphConfig(size=32, steps=60, frames=21, device="cpu").validate())


def frame_metrics(frames: list[np.ndarray]) -> tuple[float, float, float]:
    """Mid-frame detail against the endpoints, pacing CV and largest/median step, as ``diffmorph eval``."""
    detail = laplacian_energy(frames[(len(frames) - 1) // 2]) / (
        (laplacian_energy(frames[0]) + laplacian_energy(frames[-1])) / 2)
    return (detail, *pacing([rmse(first, second) for first, second in itertools.pairwise(frames)]))


def test_sharp_mode_beats_classic_on_a_pair_with_real_motion(fitted_motion):
    classic = list(render(replace(fitted_motion, config=replace(fitted_motion.config, mode="classic"))))
    sharp = list(render(fitted_motion))  # the defaults: sharp mode, even pacing
    classic_detail, classic_cv, _ = frame_metrics(classic)
    sharp_detail, sharp_cv, sharp_ratio = frame_metrics(sharp)
    assert sharp_detail >= 0.5 and sharp_detail > classic_detail + 0.2
    assert sharp_cv <= 0.1 and sharp_cv < classic_cv and sharp_ratio <= 1.5
    for frames in (classic, sharp):
        assert np.array_equal(frames[0], to_uint8(fitted_motion.images[0]))
        assert np.array_equal(frames[-1], to_uint8(fitted_motion.images[1]))


def test_even_pacing_retimes_without_moving_the_endpoints():
    # The original method's frames of this pair (its fit from no warp, classic frames) change unevenly
    # (CV about 0.17), so re-timing has work to do.
    a, b = textured_motion_pair()
    config = MorphConfig(size=32, steps=60, refine=0, frames=21, align="none", device="cpu")
    original = pair_result(a, b, config.validate())
    even, linear = (replace(original, config=replace(original.config, mode="classic", pacing=pacing))
                    for pacing in ("even", "linear"))
    renderer = even.renderer()
    assert renderer.paced(0.0) == 0.0 and renderer.paced(1.0) == 1.0
    strengths = [renderer.paced(t) for t in frame_times(41)]
    assert all(0.0 <= s <= 1.0 for s in strengths) and strengths == sorted(strengths)
    assert max(abs(s - t) for s, t in zip(strengths, frame_times(41), strict=True)) > 0.02
    assert [linear.renderer().paced(t) for t in (0.25, 0.5)] == [0.25, 0.5]
    even_cv, linear_cv = (frame_metrics(list(render(result)))[1] for result in (even, linear))
    assert even_cv <= 0.1 < linear_cv


def test_even_pacing_measures_the_frames_it_is_given():
    # The demo's sun is carried across the sky with the stars' fine detail: the change between two frames
    # grows less than the time between them, so a pace measured on the 64 small frames alone leaves the
    # frames less even (CV about 0.1 here); measured again at the 41 frames' own times, about 0.04.
    a, b = (torch.from_numpy(image).permute(2, 0, 1)[None].float() * 2 - 1 for image in demo_pair(240, 180))
    result = pair_result(a, b, MorphConfig(size=64, steps=120, frames=41, device="cpu").validate())
    assert result.segments[0].start.subject is not None

    def cv(renderer: Renderer) -> float:
        frames = [to_uint8(renderer.frame(t)) for t in frame_times(41)]
        return pacing([rmse(first, second) for first, second in itertools.pairwise(frames)])[0]

    measured_again = cv(result.renderer(frames=41))
    assert measured_again <= 0.1 and measured_again < 0.6 * cv(result.renderer())
    # render() makes its frames on threads of one PyTorch thread each: a pixel may round to the next level
    assert measured_again == pytest.approx(frame_metrics(list(render(result)))[1], rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 frames"):
        result.renderer(frames=1)


def test_sharp_mode_of_an_unchanged_image_is_the_image():
    image = to_tensor(blobs(20, 30, seed=4) / 255.0)
    result = pair_result(image, image.clone(), MorphConfig(frames=5, device="cpu"), maps=torch.zeros(16, 84, 84))
    for frame in render(result):
        assert np.abs(frame.astype(int) - to_uint8(image)).max() <= 1


def test_auto_pacing_follows_the_mode():
    assert MorphConfig().frame_pacing == "even"
    assert MorphConfig(mode="classic").frame_pacing == "linear"
    assert MorphConfig(mode="classic", pacing="even").frame_pacing == "even"
    with pytest.raises(ConfigError, match="unknown pacing"):
        MorphConfig(pacing="smooth").validate()


@pytest.mark.parametrize("zoom", [1, 3])
def test_sharp_frames_carry_a_subject_that_moved_further_than_its_size(zoom):
    # A bright disc moves 80 px right over flat ground, and the maps say so exactly: the A->B warp fetches
    # it from 80 px to the left around its place in B, the B->A warp from 80 px right around its place in A.
    # Three times as large, the frames are larger than the carried grids, and what the disc leaves is
    # filled in at the grids' size.
    height, width, radius, shift = 96 * zoom, 128 * zoom, 8.0 * zoom, 80.0 * zoom
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")

    def disc(centre_x: float, size: float, soft: float = 1.0) -> torch.Tensor:
        return ((size - torch.hypot(ys - 48 * zoom, xs - centre_x * zoom)) / soft + 0.5).clamp(0, 1)

    a = (-0.5 + 1.3 * disc(24, radius)).expand(1, 3, height, width).contiguous()
    b = (-0.5 + 1.3 * disc(104, radius)).expand(1, 3, height, width).contiguous()
    scales = MapScales()
    maps = torch.zeros(16, height, width)
    maps[7] = shift * disc(104, radius + 6 * zoom, 4.0 * zoom) / (width * scales.warp)
    maps[15] = -shift * disc(24, radius + 6 * zoom, 4.0 * zoom) / (width * scales.warp)
    frames = {mode: Renderer(maps, a, b, scales, torch.device("cpu"), mode=mode, pacing="linear").frame(0.5)[0, 0]
              for mode in ("sharp", "classic")}
    start, middle, end, ground = ((y * zoom, x * zoom) for y, x in ((48, 24), (48, 64), (48, 104), (10, 10)))
    sharp, classic = frames["sharp"], frames["classic"]
    # Carried forward, the disc is halfway at t = 0.5, whole, and gone from both ends.
    assert float(sharp[middle]) == pytest.approx(0.8, abs=0.05)
    assert [float(sharp[point]) for point in (start, end)] == pytest.approx([-0.5, -0.5], abs=0.05)
    # Scaled backward warps (the original's frames) leave it fading at both ends and nowhere between.
    assert float(classic[middle]) == pytest.approx(-0.5, abs=0.05)
    assert [float(classic[point]) for point in (start, end)] == pytest.approx([0.15, 0.15], abs=0.05)
    assert float(sharp[ground]) == pytest.approx(-0.5, abs=1e-4)
    renderer = Renderer(maps, a, b, scales, torch.device("cpu"))
    for t, image in ((0.0, a), (1.0, b)):  # up to the rounding of values half-way between two levels
        assert np.abs(to_uint8(renderer.frame(t)).astype(int) - to_uint8(image)).max() <= 1


def test_a_subject_rolled_far_over_other_ground_is_carried_once():
    # A red ball on sand, then a larger yellow one far away on moss: nothing around the ball matches, so the
    # whole picture has no move and bending does not make the grounds agree. The default carries the ball:
    # halfway, each layer shows it once, in the middle, and neither where it was nor where it will be.
    a, b = ball((0.3, 0.3), 0.12, RED, SAND, seed=1), ball((0.65, 0.7), 0.15, YELLOW, MOSS, seed=2)
    start, middle, end = (38, 38), (61, 64), (83, 90)  # the ball's centre in A, halfway, in B (pixels)
    shown = {}
    for align in ("auto", "global"):
        config = MorphConfig(size=32, steps=30, precision="fp32", align=align, device="cpu", pacing="linear")
        layers = pair_result(a, b, config).renderer().layers(0.5)
        red, yellow = layers[0, 0] - layers[0, 1], layers[1, 0]  # the red ball's R - G in A's layer; R in B's
        shown[align] = [float(red[start]), float(red[middle]), float(yellow[middle]), float(yellow[end])]
    # Measured: red 0.60 where it was (the ground there is filled in from around, the ball beside it too) and
    # 1.28 halfway; yellow 0.78 halfway and 0.03 where it will be. The grounds: 0.2 and -0.6.
    red_start, red_middle, yellow_middle, yellow_end = shown["auto"]
    assert red_start < 0.8 and red_middle > 1.0 and yellow_middle > 0.5 and yellow_end < 0.3
    # Without the subject's move the ball stays in both layers and fades out and in at its two places
    # (measured 1.26, 0.20, -0.60, 0.81).
    red_start, red_middle, yellow_middle, yellow_end = shown["global"]
    assert red_start > 1.0 and red_middle < 0.5 and yellow_middle < 0.0 and yellow_end > 0.5


@pytest.mark.parametrize("corners", [True, False])
def test_a_window_upsampled_alone_matches_the_whole_upsampling(corners):
    from diffmorph.render.filling import _upsampled

    image = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(0))
    whole = torch.nn.functional.interpolate(image, size=(101, 77), mode="bilinear", align_corners=corners)
    for top, bottom, left, right in ((0, 101, 0, 77), (13, 40, 60, 77), (0, 1, 5, 6)):
        window = _upsampled(image, (top, bottom, left, right), (101, 77), corners=corners)
        torch.testing.assert_close(window, whole[:, :, top:bottom, left:right], rtol=0, atol=1e-5)


def test_untrusted_pixels_are_filled_where_the_whole_frame_filling_would_put_them():
    from diffmorph.ops import fill_holes, resize
    from diffmorph.render.filling import fill_untrusted
    from diffmorph.render.sampling import shrink

    generator = torch.Generator().manual_seed(1)
    layers = torch.rand(2, 3, 64, 96, generator=generator)
    trust = torch.ones(2, 1, 16, 24)
    trust[0, :, 3:6, 10:15] = 0.0
    trust[0, :, 6, 10:15] = 0.5  # fading into the filling
    # The filling of the whole frame: at the trust's size, upsampled, blended by the trust upsampled.
    known = -torch.nn.functional.max_pool2d(-trust, 3, stride=1, padding=1) >= 1.0
    filling = resize(fill_holes(shrink(layers, 16, 24), known), 64, 96)
    weight = torch.nn.functional.interpolate(trust, size=(64, 96), mode="bilinear", align_corners=True)
    expected = filling.lerp(layers, weight)
    filled = fill_untrusted(layers.clone(), trust)
    torch.testing.assert_close(filled, expected, rtol=0, atol=1e-5)
    assert torch.equal(filled[1], layers[1])  # all trusted: untouched
    assert (filled[0] - layers[0]).abs().amax() > 0.05  # and the untrusted part did change


@pytest.mark.parametrize("mode", ["sharp", "classic"])
def test_a_numpy_time_renders_as_a_python_float_does(mode):
    result = result_for(24, 40)
    result.config = MorphConfig(frames=7, device="cpu", mode=mode)
    renderer = result.renderer(0, "cpu")
    assert torch.equal(renderer.frame(np.float64(0.4)), renderer.frame(0.4))


def test_opencv_and_torch_fetch_the_sharp_frames_alike(fitted_motion):
    # On a CPU, OpenCV samples the detail band; torch's bicubic grid_sample does it on other devices. The two
    # agree up to rounding where the frame is carried (the two upsample the grids a little differently), and both
    # keep the ends exact.
    from diffmorph.ops import scales_of
    from diffmorph.render.frames import FrameParams

    a, b = fitted_motion.images
    scales = scales_of(fitted_motion.config)
    renderers = [Renderer(fitted_motion.segments[0].maps, a, b, scales, torch.device("cpu"), frames=9,
                          params=FrameParams(opencv=opencv)) for opencv in (True, False)]
    assert renderers[0]._full.sampler is not None and renderers[1]._full.sampler is None
    for t in frame_times(9):
        fast, plain = (to_uint8(renderer.frame(t)).astype(int) for renderer in renderers)
        assert np.abs(fast - plain).mean() < 0.2 and np.abs(fast - plain).max() <= 8, t
        if t in (0.0, 1.0):
            assert np.array_equal(fast, to_uint8(a if t == 0.0 else b).astype(int)) and np.array_equal(fast, plain)
    middle = to_uint8(renderers[0].frame(0.5)).astype(int)
    assert np.abs(middle - to_uint8(a).astype(int)).mean() > 1  # it moved: the comparison above is not of still frames


def test_the_remap_sampler_fetches_where_grid_sample_does():
    from diffmorph.ops import sampling_grid
    from diffmorph.render.sampling import RemapSampler

    generator = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 40, 56, generator=generator) * 2 - 1
    flow = torch.nn.functional.interpolate(torch.randn(2, 2, 3, 4, generator=generator) * 4, size=(10, 14),
                                           mode="bicubic", align_corners=True)
    small = sampling_grid(flow)  # (2, 10, 14, 2), smooth, up to 4 px of the 10 x 14 frame
    sampler = RemapSampler(images)
    fetched = sampler(small, (40, 56), [False, False]).clone()  # the sampler's buffer is used again below
    # torch upsamples the grid as a departure from no warp too, with half-pixel centres
    identity = sampling_grid(torch.zeros(1, 2, 40, 56))
    departure = torch.nn.functional.interpolate((small - sampling_grid(torch.zeros(1, 2, 10, 14))).permute(0, 3, 1, 2),
                                                size=(40, 56), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.grid_sample(images, identity + departure.permute(0, 2, 3, 1), mode="bicubic",
                                               padding_mode="border", align_corners=True)
    assert fetched.shape == (2, 3, 40, 56) and fetched.is_contiguous(memory_format=torch.channels_last)
    assert (fetched - expected).abs().max() < 1e-3
    still = sampler(small, (40, 56), [True, False])
    assert torch.equal(still[0], images[0]) and torch.allclose(still[1], fetched[1])
