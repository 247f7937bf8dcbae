import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

import diffmorph
from diffmorph.errors import ConfigError, OutputError
from diffmorph.render import Renderer
from synthetic import blobs

FAST = {"steps": 4, "refine": 2, "size": 32, "frames": 5, "device": "cpu"}


def test_morph_returns_a_typed_result_at_a_native_size():
    a, b = blobs(30, 44, seed=1), blobs(30, 44, seed=2)
    calls = []
    result = diffmorph.morph([a, b], progress=lambda done, loss: calls.append(done), **FAST)
    assert isinstance(result, diffmorph.MorphResult)
    assert result.size == (44, 30)
    (segment,) = result.segments
    assert segment.maps.shape == (16, 84, 84)
    assert len(segment.losses) == 6 and calls == [1, 2, 3, 4, 5, 6]  # the network's steps, then the refinement's
    assert result.config.steps == 4 and result.config.mode == "sharp"
    assert set(result.fidelity()) == {"a_to_b_psnr", "b_to_a_psnr"}


def test_b_of_another_size_is_fitted_to_a_frame():
    a = Image.fromarray(blobs(30, 40, seed=1))
    b = Image.fromarray(blobs(64, 48, seed=2))
    for fit in ("crop", "pad", "stretch"):
        result = diffmorph.morph([a, b], fit=fit, **FAST)
        assert result.images[1].shape == (1, 3, 30, 40)
        (framing,) = result.framings
        assert framing.source_size == (48, 64) and framing.method == fit


def test_bad_settings_are_config_errors():
    a = blobs(16, 16)
    with pytest.raises(ConfigError, match="--steps must be a positive integer up to 100000, got 0"):
        diffmorph.morph([a, a], steps=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        diffmorph.morph([a, a], stepz=3)
    with pytest.raises(ConfigError, match="unknown mode"):
        diffmorph.morph([a, a], mode="fancy")
    with pytest.raises(ConfigError, match="at least 2 images"):
        diffmorph.morph([a])
    with pytest.raises(ConfigError, match="give the images as one list"):
        diffmorph.morph(a, a)  # the second image where the config goes


def test_config_of_an_older_file_keeps_the_settings_it_was_made_with():
    config = diffmorph.MorphConfig
    assert config().align == "auto"
    assert config.from_dict({}).align == "none"  # files written before --align existed were fitted without it
    assert config.from_dict(config().to_dict()) == config()


@pytest.mark.parametrize(("name", "message"), [("gpu", "unknown device"), ("meta", "unsupported device"),
                                               ("cuda:7", "CUDA"), ("mps", "MPS")])
def test_resolve_device_errors(name, message):
    if name == "cuda:7" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error case needs a machine without it")
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS; the error case needs a machine without it")
    with pytest.raises(ConfigError, match=message):
        diffmorph.resolve_device(name)


def test_resolve_device_auto_and_cpu():
    assert diffmorph.resolve_device("cpu") == torch.device("cpu")
    assert diffmorph.resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_export_writes_every_output_and_each_reads_back(tmp_path):
    a, b = blobs(30, 44, seed=1), blobs(30, 44, seed=2)
    result = diffmorph.morph([a, b], **FAST)
    report = diffmorph.export(result, tmp_path / "out", formats=["mp4", "gif", "webp", "frames"], frames=6, fps=20)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "morph.mp4", "morph.gif", "morph.webp", "frames", "maps.safetensors", "a_to_b.png", "b_to_a.png",
        "maps.png", "contact_sheet.png", "config.json"])
    assert len(report.files) == 10
    with av.open(str(out / "morph.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 44, 30)
        assert sum(1 for _ in container.decode(video=0)) == 6
    for name in ("morph.gif", "morph.webp"):
        with Image.open(out / name) as image:
            assert image.n_frames == 6 and image.size == (44, 30)
    assert len(list((out / "frames").iterdir())) == 6
    for name in ("a_to_b.png", "b_to_a.png"):
        assert Image.open(out / name).size == (44, 30)
    assert Image.open(out / "maps.png").size[0] > 3 * 256
    assert Image.open(out / "contact_sheet.png").size[0] > 5 * 44
    summary = json.loads((out / "config.json").read_text())
    assert summary["config"]["frames"] == 6 and summary["config"]["fps"] == 20
    assert summary["size"] == {"width": 44, "height": 30}
    assert summary["fidelity_db"][0]["a_to_b_psnr"] == pytest.approx(report.fidelity[0]["a_to_b_psnr"])
    assert summary["segments"] == 1 and summary["fit"][0]["steps"] == 6
    # The maps file re-renders the same first frame as the exported frames.
    reloaded = diffmorph.load_maps(out / "maps.safetensors")
    first = next(diffmorph.render(reloaded, frames=6))
    assert np.array_equal(first, np.asarray(Image.open(out / "frames" / "frame_00000.png")))


def test_export_refuses_bad_formats_and_paths_before_writing(tmp_path):
    result = diffmorph.morph([blobs(16, 16), blobs(16, 16, seed=3)], **FAST)
    with pytest.raises(ConfigError, match="unknown format 'avi'"):
        diffmorph.export(result, tmp_path / "out", formats=["avi"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        diffmorph.export(result, tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failure_while_rendering_leaves_no_files(tmp_path, monkeypatch):
    result = diffmorph.morph([blobs(16, 16), blobs(16, 16, seed=3)], **FAST)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("kept")
    original = Renderer.frame
    calls = []

    def failing_frame(self, t):
        calls.append(t)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return original(self, t)

    monkeypatch.setattr(Renderer, "frame", failing_frame)
    with pytest.raises(RuntimeError, match="disk on fire"):
        diffmorph.export(result, tmp_path / "out", formats=["mp4", "gif", "webp", "frames"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.txt"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_a_freed_frame_buffer_stays_for_the_next_frame():
    # A frame-sized buffer (25 MB) freed: by default glibc returns it to the kernel, which the next frame then
    # faults in afresh, page by page; the commands keep it.
    code = """if True:
        import sys, torch
        from diffmorph.allocator import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        def resident_mb():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * 4096 / 2**20
        before = resident_mb()
        frame = torch.ones(2, 3, 1024, 1024)
        held = resident_mb()
        del frame
        print(held - before, held - resident_mb())
    """
    figures = {mode: [float(v) for v in subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                                       text=True, check=True).stdout.split()]
               for mode in ("keep", "default")}
    assert all(touched > 20 for touched, _ in figures.values())
    assert figures["default"][1] > 20  # given back
    assert figures["keep"][1] < 1  # kept


def test_a_plan_is_what_the_run_does(tmp_path):
    # One plan, made before any image is read, gives the fit's and the render's progress totals, the frames
    # written and every output's name; the morph and the export read it rather than working them out again.
    images = [blobs(24, 32, seed=k) for k in range(3)]
    config = diffmorph.MorphConfig(steps=3, refine=2, size=16, frames=5, fps=10, hold=0.2, device="cpu")
    plan = diffmorph.make_plan(config, len(images), loop=True, formats=["gif", "flow", "gif"], pingpong=True)
    assert plan.segments == 3 and plan.fit_steps == 15 and plan.formats == ("gif", "flow")
    assert plan.refine_side == 32 and plan.device == torch.device("cpu")
    steps, frames = [], []
    result = diffmorph.morph(images, plan=plan, progress=lambda done, loss: steps.append(done))
    assert steps[-1] == plan.fit_steps and result.loop
    report = diffmorph.export(result, tmp_path, plan=plan, on_frame=frames.append)
    assert report.frames == frames[-1] == plan.frames == 2 * (2 + 5 + 2 * 4 + 3 * 2) - 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(plan.outputs)


def test_a_plan_is_checked_before_any_work():
    a = blobs(16, 16)
    plan = diffmorph.make_plan(diffmorph.MorphConfig(**FAST), 2)
    with pytest.raises(ConfigError, match="either a plan or a config"):
        diffmorph.morph([a, a], diffmorph.MorphConfig(), plan=plan)
    with pytest.raises(ConfigError, match="the plan is for 2 images, got 3"):
        diffmorph.morph([a, a, a], plan=plan)
    with pytest.raises(ConfigError, match="unknown format 'avi'"):
        diffmorph.make_plan(diffmorph.MorphConfig(), 2, formats=["avi"])
    with pytest.raises(ConfigError, match="over the limit of 100,000"):
        diffmorph.make_plan(diffmorph.MorphConfig(frames=10_000), 12)
    with pytest.raises(ConfigError, match="2 duration"):
        diffmorph.make_plan(diffmorph.MorphConfig(durations=(1.0, 2.0)), 2)
    result = diffmorph.morph([a, a], plan=plan)
    with pytest.raises(ConfigError, match="either a plan or formats"):
        diffmorph.export(result, "unused", plan=plan, formats=["gif"])
