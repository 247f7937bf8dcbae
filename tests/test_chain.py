import json

import numpy as np
import pytest
import torch
from PIL import Image

import diffmorph
from diffmorph.cli import main
from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError
from diffmorph.pipeline import MorphResult
from diffmorph.render import timeline, to_uint8
from synthetic import blobs

FAST = {"steps": 3, "refine": 2, "size": 32, "frames": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def chain():
    images = [blobs(40, 48, seed=i) for i in range(3)]
    return images, diffmorph.morph(images, **FAST)


def test_timeline_shows_each_keyframe_once_and_holds_it():
    config = MorphConfig(frames=4, fps=10, hold=0.2)  # 2 held frames at every keyframe
    times = timeline(config.segment_frames(3), config.fps, hold=config.hold)
    assert len(times) == 4 + 3 + 3 + 4 * 2
    assert times[:3] == [(0, 0.0)] * 3
    for keyframe in [(0, 0.0), (0, 1.0), (1, 1.0), (2, 1.0)]:  # each keyframe: once, then held twice
        assert times.count(keyframe) == 3
    pingpong = timeline([3, 3], 45.0, pingpong=True)
    assert pingpong == [(0, 0.0), (0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0), (1, 0.5), (0, 1.0), (0, 0.5), (0, 0.0)]
    assert pingpong[0] == pingpong[-1]


def test_chain_frames_pass_through_every_image_exactly(chain):
    images, result = chain
    frames = list(diffmorph.render(result))
    assert len(frames) == 4 + 3
    for index, image in zip((0, 3, 6), images, strict=True):
        assert np.array_equal(frames[index], image)  # keyframes exact (8-bit inputs survive 16-bit storage)
    assert not np.array_equal(frames[2], frames[3]) and not np.array_equal(frames[3], frames[4])  # no repeats


def test_loop_closes_and_other_sizes_follow_the_first_image(tmp_path):
    images = [blobs(40, 48, seed=1), blobs(60, 60, seed=2), blobs(30, 80, seed=3)]
    result = diffmorph.morph(images, loop=True, **FAST)
    assert len(result.segments) == 3
    assert [f.method for f in result.framings] == ["crop", "crop"]
    frames = list(diffmorph.render(result))
    assert len(frames) == 4 + 3 + 3
    assert all(frame.shape == (40, 48, 3) for frame in frames)
    assert np.array_equal(frames[0], frames[-1])  # loop closure


def test_maps_file_round_trip_and_export(chain, tmp_path):
    _, result = chain
    result.save(tmp_path / "seq.safetensors")
    again = MorphResult.load(tmp_path / "seq.safetensors")
    assert len(again.segments) == 2 and not again.loop
    for first, second in zip(diffmorph.render(result), diffmorph.render(again), strict=True):
        assert np.array_equal(first, second)
    written = diffmorph.export(result, tmp_path / "out", formats=["gif", "flow"], hold=0.1, fps=20).files
    names = sorted(p.name for p in written)
    assert "a_to_b.png" not in names and "flow_a_to_b.npy" not in names  # a chain's stills are its images
    assert "flow_02_b_to_a.flo" in names and "maps.safetensors" in names and "morph.gif" in names
    with Image.open(tmp_path / "out" / "morph.gif") as gif:
        assert gif.n_frames == 4 + 3 + 3 * 2
    summary = json.loads((tmp_path / "out" / "config.json").read_text())
    assert summary["segments"] == 2 and summary["frames_written"] == 13
    with pytest.raises(ConfigError, match="not a render setting"):
        diffmorph.export(result, tmp_path / "x", steps=5)
    with pytest.raises(ConfigError, match="at least 2 images"):
        diffmorph.morph([blobs(40, 48)], **FAST)


def test_cli_chain_loop_pingpong_and_render(tmp_path, capsys):
    paths = []
    for index, (height, width) in enumerate([(40, 48), (40, 48), (50, 50)]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(blobs(height, width, seed=index + 5)).save(paths[-1])
    out = tmp_path / "out"
    flags = ["--steps", "3", "--size", "32", "--frames", "4", "--device", "cpu"]
    assert main(["morph", *map(str, paths), "-o", str(out), *flags, "--loop", "--format", "frames"]) == 0
    err = capsys.readouterr().err
    assert "image 3 (50 x 50) fitted to image 1's 48 x 40 frame" in err
    frames = sorted((out / "frames").iterdir())
    assert len(frames) == 4 + 3 + 3
    assert np.array_equal(np.asarray(Image.open(frames[0])), np.asarray(Image.open(frames[-1])))
    assert np.array_equal(np.asarray(Image.open(frames[0])), np.asarray(Image.open(paths[0])))

    again = tmp_path / "again"
    assert main(["render", str(out / "maps.safetensors"), "-o", str(again), "--frames", "3", "--pingpong",
                 "--format", "frames", "-q"]) == 0
    assert len(list((again / "frames").iterdir())) == 2 * (3 + 2 + 2) - 1

    pair = tmp_path / "pair"
    assert main(["morph", *map(str, paths[:2]), "-o", str(pair), *flags, "--pingpong", "--format", "frames",
                 "-q"]) == 0
    assert len(list((pair / "frames").iterdir())) == 2 * 4 - 1
    assert main(["morph", str(paths[0]), "-o", str(tmp_path / "one"), *flags]) == 1
    assert "at least two images" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()


def test_the_last_segment_of_a_loop_goes_back_to_the_first_image(chain):
    images, _ = chain
    result = diffmorph.morph(images[:2], loop=True, **FAST)
    assert len(result.images) == 2 and len(result.segments) == 2
    first, last = result.pair(1)
    assert first is result.images[1] and last is result.images[0]
    assert np.array_equal(to_uint8(last), images[0])


def test_maps_files_get_ordinary_permissions(chain, tmp_path):
    import os

    _, result = chain
    result.save(tmp_path / "seq.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "seq.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_chain_renders_at_another_width(chain, tmp_path):
    _, result = chain
    written = diffmorph.export(result, tmp_path / "out", formats=["frames"], width=24).files
    assert written
    assert Image.open(tmp_path / "out" / "frames" / "frame_00000.png").size == (24, 20)


def test_durations_set_the_frames_of_each_segment(chain, tmp_path, capsys):
    config = MorphConfig(durations=(0.2, 0.4), fps=10)  # 3 and 5 frames, the shared keyframe once
    assert config.segment_frames(2) == [3, 5]
    assert timeline(config.segment_frames(2), config.fps) == [(0, 0.0), (0, 0.5), (0, 1.0), (1, 0.25), (1, 0.5),
                                                              (1, 0.75), (1, 1.0)]
    with pytest.raises(ConfigError, match=r"2 duration.* for 3 segment"):
        config.segment_frames(3)
    with pytest.raises(ConfigError, match="--durations"):
        MorphConfig(durations=(1.0, -1.0)).validate()

    images, result = chain
    folder = tmp_path / "timed"
    diffmorph.export(result, folder, formats=["frames"], durations=[0.2, 0.4], fps=10)
    assert len(list((folder / "frames").iterdir())) == 7
    assert json.loads((folder / "config.json").read_text())["config"]["durations"] == [0.2, 0.4]
    again = MorphResult.load(folder / "maps.safetensors")
    assert again.config.durations == (0.2, 0.4)  # stored with the maps, as a tuple
    rendered = tmp_path / "frames-again"
    assert main(["render", str(folder / "maps.safetensors"), "-o", str(rendered), "--frames", "3", "--format",
                 "frames", "-q"]) == 0  # --frames replaces the stored durations
    assert len(list((rendered / "frames").iterdir())) == 5

    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"in{index}.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "bad"
    code = main(["morph", *map(str, paths), "-o", str(out), "--durations", "1", "-q", "--steps", "3", "--size", "32"])
    err = capsys.readouterr().err
    assert code == 1 and "give one per segment" in err and err.count("\n") == 1 and not out.exists()


def test_segments_fitted_side_by_side_match_one_after_another(chain):
    images, one_by_one = chain
    side_by_side = diffmorph.morph(images, batch=True, **FAST)
    assert len(side_by_side.segments) == 2
    for together, alone in zip(side_by_side.segments, one_by_one.segments, strict=True):
        torch.testing.assert_close(together.maps, alone.maps, atol=1e-3, rtol=0)


def test_each_segment_starts_from_its_own_alignment(tmp_path, capsys):
    # Image 2 is image 1's textured scene moved; image 3 is unrelated: only segment 1 finds a move, and
    # segment 2 is not bent either (bending leaves unrelated structures apart).
    noisy = blobs(64, 64, seed=4) + np.random.default_rng(4).normal(0, 50, (64, 64, 1))
    scene = np.clip(noisy, 0, 255).astype(np.uint8)
    images = [scene, np.roll(scene, (5, 10), axis=(0, 1)), blobs(64, 64, seed=9)]
    chain = diffmorph.morph(images, **FAST)
    first, second = (segment.start for segment in chain.segments)
    assert first.move is not None and second.move is None
    assert not first.bent and not second.bent
    assert first.move.shift == pytest.approx((5 / 64, 10 / 64), abs=1 / 64)
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    flags = ["--steps", "3", "--size", "32", "--frames", "4", "--device", "cpu", "--format", "frames"]
    assert main(["morph", *map(str, paths), "-o", str(tmp_path / "out"), *flags]) == 0
    err = capsys.readouterr().err
    assert "segment 1: aligned: B is A moved 16 % right and 8 % down\n" in err and "segment 2" not in err
