import json

import numpy as np
import pytest
from PIL import Image

import diffmorph
from diffmorph.cli import main
from diffmorph.errors import InputImageError
from diffmorph.evaluate import evaluate, laplacian_energy, pacing, x264_crf
from diffmorph.io.writers import GifWriter, Mp4Writer, PngFramesWriter
from synthetic import blobs


def noise(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def dissolve(a: np.ndarray, b: np.ndarray, count: int) -> list[np.ndarray]:
    return [((1 - t) * a + t * b).round().astype(np.uint8) for t in np.linspace(0, 1, count)]


def write_frames(folder, frames):
    writer = PngFramesWriter(folder)
    for frame in frames:
        writer.add(frame)
    writer.close()
    return folder


def save(path, array):
    Image.fromarray(array).save(path)
    return path


def test_constant_sequence(tmp_path):
    image = noise(0)
    folder = write_frames(tmp_path / "frames", [image] * 5)
    report = evaluate(folder, image, image)
    assert report.frames == 5
    assert report.endpoint_error_first == report.endpoint_error_last == 0.0
    assert report.mid_frame_detail == pytest.approx(1.0)
    assert (report.pacing_cv, report.pacing_max_over_median) == (0.0, 1.0)


def test_cross_dissolve_of_noise_scores_half_with_even_pacing(tmp_path):
    a, b = noise(1), noise(2)
    folder = write_frames(tmp_path / "frames", dissolve(a, b, 11))  # the middle frame is t = 0.5
    report = evaluate(folder, save(tmp_path / "a.png", a), save(tmp_path / "b.png", b))
    assert report.endpoint_error_first == 0.0 and report.endpoint_error_last == 0.0
    assert report.mid_frame_detail == pytest.approx(0.5, abs=0.05)
    assert report.pacing_cv < 0.02 and report.pacing_max_over_median < 1.05


def test_uneven_pacing_and_blur_are_caught(tmp_path):
    a, b = noise(3), noise(4)
    times = [0.0, 0.05, 0.1, 0.15, 0.2, 0.9, 0.95, 1.0]  # one big jump
    frames = [((1 - t) * a + t * b).round().astype(np.uint8) for t in times]
    blurred = np.asarray(Image.fromarray(frames[3]).resize((16, 16)).resize((64, 64), Image.Resampling.BILINEAR))
    frames[3] = blurred
    report = evaluate(write_frames(tmp_path / "frames", frames), a, b)
    assert report.pacing_max_over_median > 3 and report.pacing_cv > 0.5
    assert report.mid_frame_detail < 0.1


def test_laplacian_energy_and_pacing_by_hand():
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, ::4] = 255  # after the 2x box downscale: columns of 127.5, 0, 127.5, 0
    assert laplacian_energy(stripes) == pytest.approx((2 * 127.5) ** 2)
    assert pacing([]) == (0.0, 1.0)
    assert pacing([1.0, 1.0, 4.0]) == pytest.approx((np.std([1, 1, 4]) / 2.0, 4.0))


@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_reads_videos_and_gifs(tmp_path, kind):
    a, b = blobs(48, 48, seed=5), blobs(48, 48, seed=6)
    frames = dissolve(a, b, 9)
    path = tmp_path / f"m.{kind}"
    writer = Mp4Writer(path, 48, 48, 24) if kind == "mp4" else GifWriter(path, 24)
    for frame in frames:
        writer.add(frame)
    writer.close()
    report = evaluate(path, a, b)
    assert report.frames == 9
    assert report.endpoint_error_first < 6 and report.endpoint_error_last < 6  # lossy, but the same pictures
    swapped = evaluate(path, b, a)
    assert swapped.endpoint_error_first > 15 and swapped.endpoint_error_last > 15


@pytest.mark.parametrize(("kind", "crf"), [("mp4", 18), ("mp4", 30), ("gif", None)])
def test_a_lossy_animation_with_exact_endpoints_is_judged_exact(tmp_path, kind, crf, capsys):
    """Detailed images lose several grey levels to the codec alone: that is not the morph's error, but an endpoint
    a few frames off still is."""
    grain = noise(1, 96).astype(int) // 32 - 4  # fine grain over the shapes: a detailed photo
    a, b = ((blobs(96, 96, seed=seed) + grain).clip(0, 255).astype(np.uint8) for seed in (5, 6))
    frames = dissolve(a, b, 21)
    for name, shown in (("exact", frames), ("late", frames[4:])):
        path = tmp_path / f"{name}.{kind}"
        writer = Mp4Writer(path, 96, 96, 24, crf=crf) if kind == "mp4" else GifWriter(path, 24)
        for frame in shown:
            writer.add(frame)
        writer.close()
        report = evaluate(path, a, b)
        assert kind != "mp4" or x264_crf(path) == crf  # the loss is measured at the stream's own quality
        if name == "exact":
            assert report.endpoint_error_first > 1.0  # what a plain "within 1" would call wrong
            assert report.codec_loss_first > 1.0 and report.codec_loss_last is not None
            assert report.endpoints_exact()
        else:
            assert not report.endpoints_exact()
    assert evaluate(write_frames(tmp_path / "png", frames), a, b).codec_loss_first is None  # lossless frames
    assert main(["eval", str(tmp_path / f"exact.{kind}"), str(save(tmp_path / "a.png", a)),
                 str(save(tmp_path / "b.png", b))]) == 0
    assert "1 beyond the codec's loss" in capsys.readouterr().out


def test_fidelity_from_a_maps_file_and_cli_json(tmp_path, capsys):
    rng = np.random.default_rng(7)
    a = (np.clip(rng.normal(0.5, 0.2, (32, 40, 3)), 0, 1) * 255).astype(np.uint8)
    b = np.roll(a, 3, axis=1)
    result = diffmorph.morph([a, b], steps=5, size=32, device="cpu", frames=6)
    diffmorph.export(result, tmp_path / "out", formats=["frames"])
    pa, pb = save(tmp_path / "a.png", a), save(tmp_path / "b.png", b)
    report = evaluate(tmp_path / "out" / "frames", pa, pb, maps_file=tmp_path / "out" / "maps.safetensors")
    assert report.endpoint_error_first == 0.0 and report.endpoint_error_last == 0.0
    assert report.fidelity_a_to_b_db is not None and report.fidelity_a_to_b_db > 10

    code = main(["eval", str(tmp_path / "out" / "frames"), str(pa), str(pb), "--maps",
                 str(tmp_path / "out" / "maps.safetensors"), "--json"])
    values = json.loads(capsys.readouterr().out)
    assert code == 0 and values["frames"] == 6
    assert values["fidelity_b_to_a_db"] == pytest.approx(report.fidelity_b_to_a_db)
    assert values["warp_melt"] == pytest.approx(report.warp_melt) and values["warp_melt"] >= 0
    assert main(["eval", str(tmp_path / "out" / "frames"), str(pa), str(pb)]) == 0
    table = capsys.readouterr().out
    assert "mid_frame_detail" in table and "pacing_cv" in table and "fidelity" not in table


def test_bad_inputs(tmp_path, capsys):
    a = noise(8)
    with pytest.raises(InputImageError, match="no such file"):
        evaluate(tmp_path / "missing.mp4", a, a)
    (tmp_path / "junk.mp4").write_text("not a video")
    with pytest.raises(InputImageError, match="not a video"):
        evaluate(tmp_path / "junk.mp4", a, a)
    folder = write_frames(tmp_path / "frames", [noise(9, 32)] * 4)
    with pytest.raises(InputImageError, match="frames are 32 x 32 but A is 64 x 64"):
        evaluate(folder, a, a)
    assert main(["eval", str(tmp_path / "missing.mp4"), str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
