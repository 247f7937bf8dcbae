import json
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffmorph.cli import build_parser
from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError, InputImageError, MapsFileError, OutputError
from diffmorph.evaluate import codec_losses
from diffmorph.io.images import fit_to_frame, from_uint16, header_size, load_image, parse_colour, to_tensor, to_uint16
from diffmorph.io.outputs import EXPORT_FORMATS, OutputFolder, check_output_folder, output_names
from diffmorph.io.writers import (
    OUTPUT_NAMES,
    WRITTEN,
    GifWriter,
    Mp4Writer,
    PngFramesWriter,
    WebpWriter,
    WriterOptions,
    clip_palette,
    even_size,
    open_writer,
)
from diffmorph.ops import gaussian_blur
from diffmorph.pipeline import NOT_RECORDED, MorphResult, Segment, render
from diffmorph.start import Alignment, StartRecord
from synthetic import blobs


def moving_frames(count: int, height: int = 32, width: int = 48) -> list[np.ndarray]:
    base = blobs(height, width)
    return [np.roll(base, shift=i * 2, axis=1) for i in range(count)]


def png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


class TestLoadImage:
    def test_rgb_png_round_trips(self, tmp_path):
        pixels = blobs(20, 30)
        Image.fromarray(pixels).save(tmp_path / "a.png")
        out = load_image(tmp_path / "a.png")
        assert out.shape == (20, 30, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out * 255, pixels, atol=1e-3)

    def test_exif_orientation_is_applied(self, tmp_path):
        pixels = np.zeros((20, 30, 3), np.uint8)
        pixels[:, :10] = 255  # white on the left
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
        out = load_image(tmp_path / "rotated.jpg")
        assert out.shape == (30, 20, 3)  # displayed portrait
        assert out[:10].mean() > 0.9 and out[-10:].mean() < 0.1  # the white band is now at the top

    def test_greyscale_becomes_grey_rgb(self, tmp_path):
        Image.fromarray(np.full((8, 8), 100, np.uint8), "L").save(tmp_path / "g.png")
        out = load_image(tmp_path / "g.png")
        np.testing.assert_allclose(out, 100 / 255, atol=1e-6)

    def test_sixteen_bit_greyscale_keeps_its_range(self, tmp_path):
        levels = np.full((8, 8), 40000, np.uint16)
        Image.fromarray(levels).save(tmp_path / "g16.png")
        assert Image.open(tmp_path / "g16.png").mode.startswith("I")
        np.testing.assert_allclose(load_image(tmp_path / "g16.png"), 40000 / 65535, atol=1e-6)

    def test_sixteen_bit_rgb(self, tmp_path):
        levels = np.zeros((8, 8, 3), np.uint16)
        levels[..., 0], levels[..., 1], levels[..., 2] = 65535, 32768, 0
        encoder = av.CodecContext.create("png", "w")
        encoder.width, encoder.height, encoder.pix_fmt = 8, 8, "rgb48be"
        frame = av.VideoFrame.from_ndarray(levels, format="rgb48le").reformat(format="rgb48be")
        (tmp_path / "rgb16.png").write_bytes(bytes(encoder.encode(frame)[0]))
        np.testing.assert_allclose(load_image(tmp_path / "rgb16.png")[0, 0], [1.0, 0.5, 0.0], atol=1 / 255)

    @pytest.mark.parametrize(("background", "expected"), [("white", 1.0), ("black", 0.0), ("#808080", 128 / 255)])
    def test_transparency_is_composited_onto_the_background(self, tmp_path, background, expected):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., 0] = 255
        rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
        Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
        out = load_image(tmp_path / "t.png", background=background)
        np.testing.assert_allclose(out[0, 0], [1, 0, 0], atol=1e-6)
        np.testing.assert_allclose(out[7, 0], [expected] * 3, atol=1e-6)

    def test_palette_with_transparency(self, tmp_path):
        image = Image.new("P", (8, 8), 0)
        image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        image.paste(1, (0, 0, 8, 4))
        image.info["transparency"] = 0
        image.save(tmp_path / "p.png", transparency=0)
        out = load_image(tmp_path / "p.png", background="white")
        np.testing.assert_allclose(out[0, 0], [0, 0, 1], atol=1e-6)  # opaque blue
        np.testing.assert_allclose(out[7, 0], [1, 1, 1], atol=1e-6)  # transparent red shows the background

    def test_cmyk_jpeg(self, tmp_path):
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # red in CMYK
        out = load_image(tmp_path / "c.jpg")
        assert out.shape == (16, 16, 3)
        assert out[..., 0].mean() > 0.8 and out[..., 1].mean() < 0.2 and out[..., 2].mean() < 0.2

    @pytest.mark.parametrize(("array", "expected"), [
        (np.full((5, 6), 255, np.uint8), 1.0),
        (np.full((5, 6, 3), 65535, np.uint16), 1.0),
        (np.full((5, 6, 1), 0.25, np.float32), 0.25),
    ])
    def test_arrays(self, array, expected):
        out = load_image(array)
        assert out.shape == (5, 6, 3)
        np.testing.assert_allclose(out, expected)

    def test_pil_image(self):
        out = load_image(Image.new("RGB", (7, 5), (255, 0, 0)))
        assert out.shape == (5, 7, 3) and out[0, 0, 0] == 1.0

    @pytest.mark.parametrize(("make", "message"), [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, not an image"), "not an image"),
        (lambda p: p.write_bytes(png_bytes(0, 0)), "zero size"),
        (lambda p: p.mkdir(), "folder"),
    ])
    def test_bad_files(self, tmp_path, make, message):
        path = tmp_path / "bad.png"
        make(path)
        with pytest.raises(InputImageError, match=message) as info:
            load_image(path, label="A")
        assert "\n" not in str(info.value) and str(path) in str(info.value)

    def test_truncated_file(self, tmp_path):
        Image.fromarray(blobs(64, 64)).save(tmp_path / "full.png")
        data = (tmp_path / "full.png").read_bytes()
        (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputImageError, match="truncated"):
            load_image(tmp_path / "cut.png")

    def test_pixel_limit(self, tmp_path):
        Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
        with pytest.raises(InputImageError, match="over the limit of 5,000"):
            load_image(tmp_path / "big.png", max_pixels=5000)

    def test_too_small_and_bad_arrays(self):
        with pytest.raises(InputImageError, match="too small"):
            load_image(np.zeros((2, 8, 3), np.uint8))
        with pytest.raises(InputImageError, match="zero size"):
            load_image(np.zeros((0, 8, 3), np.uint8))
        with pytest.raises(InputImageError, match=r"in \[0, 1\]"):
            load_image(np.full((8, 8, 3), 2.0))
        with pytest.raises(InputImageError, match="must be"):
            load_image(np.zeros((8, 8, 2), np.uint8))

    def test_unknown_colour(self):
        with pytest.raises(ConfigError, match="unknown colour"):
            parse_colour("not-a-colour")


class TestFitToFrame:
    def test_crop_fills_and_centres(self):
        image = np.zeros((40, 80, 3), np.float32)
        image[:, 30:50] = 1.0  # a centred white band
        out, framing = fit_to_frame(image, 20, 20, "crop")
        assert out.shape == (20, 20, 3)
        assert out[:, 5:15].mean() > 0.95 and out[:, :3].mean() < 0.05
        assert "crop" in framing.describe() and "80 x 40" in framing.describe()

    def test_pad_keeps_everything_and_pads_with_background(self):
        image = np.zeros((40, 80, 3), np.float32)
        out, _ = fit_to_frame(image, 20, 20, "pad", background="white")
        assert out.shape == (20, 20, 3)
        assert out[0].min() == 1.0 and out[10].max() == 0.0  # padding on top, the image in the middle

    def test_stretch(self):
        out, _ = fit_to_frame(np.full((40, 80, 3), 0.5, np.float32), 30, 20, "stretch")
        assert out.shape == (20, 30, 3)
        np.testing.assert_allclose(out, 0.5, atol=1e-5)

    def test_same_size_is_untouched(self):
        image = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
        out, framing = fit_to_frame(image, 12, 10, "crop")
        assert out is image and framing.describe() == "B matches A's 12 x 10 frame"


def test_sixteen_bit_quantisation_round_trips():
    image = np.random.default_rng(0).random((6, 5, 3), dtype=np.float32)
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 6, 5)
    assert torch.equal(from_uint16(to_uint16(tensor)), tensor)


class TestWriters:
    def test_mp4_is_h264_yuv420p_with_every_frame(self, tmp_path):
        frames = moving_frames(12, 33, 47)  # odd sizes: H.264 in yuv420p drops the last row/column
        writer = Mp4Writer(tmp_path / "m.mp4", 47, 33, fps=24)
        for frame in frames:
            writer.add(frame)
        writer.close()
        with av.open(str(tmp_path / "m.mp4")) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.width, stream.height) == even_size(47, 33) == (46, 32)
            assert stream.average_rate == 24
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 12
        error = np.abs(decoded[5].astype(int) - frames[5][:32, :46].astype(int)).mean()
        assert error < 6  # lossy, but the same picture

    @pytest.mark.parametrize(("kind", "fps", "duration"), [("GIF", 45, 20), ("GIF", 24, 40), ("WEBP", 25, 40)])
    def test_animations_loop_with_every_frame(self, tmp_path, kind, fps, duration):
        path = tmp_path / f"m.{kind.lower()}"
        writer = GifWriter(path, fps) if kind == "GIF" else WebpWriter(path, 47, 33, fps)
        frames = moving_frames(9, 33, 47)  # odd sizes
        frames.insert(4, frames[4])  # an unchanged frame is still its own frame
        for frame in frames:
            writer.add(frame)
        writer.close()
        with Image.open(path) as image:
            assert image.format == kind
            assert image.n_frames == len(frames)
            assert image.size == (47, 33)
            assert image.info.get("loop") == 0
            image.seek(1)
            image.load()
            assert image.info.get("duration") == duration
            image.seek(3)
            decoded = np.asarray(image.convert("RGB")).astype(int)
            # A 256-colour palette, or lossy WebP with half-resolution chroma on this tiny sharp image.
            assert np.abs(decoded - frames[3]).mean() < (4 if kind == "GIF" else 8)

    @pytest.mark.parametrize(("palette", "least_db"), [("frame", 38.0), ("clip", 34.0)])
    def test_gif_keeps_a_drifting_gradient(self, tmp_path, palette, least_db):
        """A sunset sky that darkens into night: a GIF's palette must follow it, not band or shift its colours.
        Frames and GIF are compared blurred (a band is an error, a dither averages out)."""
        rows = np.linspace(0.0, 1.0, 48)[:, None, None]
        dusk = (1 - rows) * [250, 150, 60] + rows * [120, 40, 60]  # (48, 1, 3): orange above, purple below
        night = (1 - rows) * [40, 50, 90] + rows * [10, 10, 30]
        frames = [np.broadcast_to((1 - t) * dusk + t * night, (48, 64, 3)).round().astype(np.uint8)
                  for t in np.linspace(0.0, 1.0, 12)]
        writer = GifWriter(tmp_path / "sky.gif", 24,
                           palette=clip_palette([frames[0], frames[-1]]) if palette == "clip" else None)
        for frame in frames:
            writer.add(frame)
        writer.close()
        blurred = lambda image: gaussian_blur(torch.from_numpy(np.asarray(image, dtype=np.float32))  # noqa: E731
                                              .permute(2, 0, 1)[None], 1.5)
        with Image.open(tmp_path / "sky.gif") as gif:
            for index, frame in enumerate(frames):
                gif.seek(index)
                error = (blurred(gif.convert("RGB")) - blurred(frame)).square().mean()
                assert 10 * torch.log10(255.0**2 / error) >= least_db, index

    def test_a_smooth_gif_palette_steps_a_glow_more_finely(self, tmp_path):
        # A glow over a darkening sky: the octree's colours sit on a grid of 16 levels a channel and band it.
        y, x = np.mgrid[0:128, 0:160]
        glow = np.exp(-3 * np.hypot(x - 80, y - 64) / 80)[..., None] * [200, 210, 190] + [40, 45, 70]
        frame = np.clip(glow + (y / 128)[..., None] * [90, 30, 60], 0, 255).round().astype(np.uint8)
        blurred = lambda image: gaussian_blur(torch.from_numpy(np.asarray(image, dtype=np.float32))  # noqa: E731
                                              .permute(2, 0, 1)[None], 1.5)
        shown = {}
        for smooth in (False, True):
            writer = GifWriter(tmp_path / f"{smooth}.gif", 24, smooth=smooth)
            writer.add(frame)
            writer.close()
            with Image.open(tmp_path / f"{smooth}.gif") as gif:
                shown[smooth] = np.asarray(gif.convert("RGB"))
        psnr = {smooth: float(10 * torch.log10(255.0**2 / (blurred(image) - blurred(frame)).square().mean()))
                for smooth, image in shown.items()}
        colours = {smooth: len(np.unique(image.reshape(-1, 3), axis=0)) for smooth, image in shown.items()}
        assert psnr[True] >= psnr[False] + 2 and colours[True] > 2 * colours[False]

    def test_gif_with_a_clip_palette_stores_one_colour_table(self, tmp_path):
        frames = moving_frames(8, 33, 47)
        palettes = {"clip": clip_palette([frames[0], frames[-1]]), "frame": None}
        for name, palette in palettes.items():
            writer = GifWriter(tmp_path / f"{name}.gif", 24, palette=palette)
            for frame in frames:
                writer.add(frame)
            writer.close()
            tables = local_colour_tables(tmp_path / f"{name}.gif")
            assert len(tables) == len(frames)
            assert tables == ([False] * len(frames) if name == "clip" else [True] * len(frames))
            with Image.open(tmp_path / f"{name}.gif") as image:
                assert image.n_frames == len(frames)
                for index in (0, len(frames) - 1):
                    image.seek(index)
                    decoded = np.asarray(image.convert("RGB")).astype(int)
                    assert np.abs(decoded - frames[index]).mean() < 4

    def test_png_frames(self, tmp_path):
        writer = PngFramesWriter(tmp_path / "frames")
        frames = moving_frames(3)
        for frame in frames:
            writer.add(frame)
        writer.close()
        names = sorted(p.name for p in (tmp_path / "frames").iterdir())
        assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "frames" / names[2])), frames[2])

    @pytest.mark.parametrize("name", sorted(WRITTEN))
    def test_each_declared_format_is_written_offered_and_measured(self, tmp_path, name):
        # A format is declared once (io.writers.WRITTEN): the writer, its output's name, --format, the list of
        # outputs a finished folder holds and eval's codec loss all follow from that declaration.
        declared = WRITTEN[name]
        frames = moving_frames(2, 32, 48)
        writer = open_writer(name, tmp_path / declared.output, WriterOptions(48, 32, 24))
        for frame in frames:
            writer.add(frame)
        writer.close()
        assert (tmp_path / declared.output).exists() and OUTPUT_NAMES[name] == declared.output
        assert declared.output in output_names([name], 1)
        assert name in EXPORT_FORMATS and name in build_parser().parse_args(
            ["morph", "a.png", "b.png", "-o", "out", "--format", name]).format
        losses = codec_losses(tmp_path / declared.output, frames[:1])
        assert (losses is not None) == declared.lossy
        if declared.lossy:
            assert 0 <= losses[0] < 8


class TestOutputFolder:
    def test_abort_leaves_nothing_and_removes_created_folders(self, tmp_path):
        target = tmp_path / "new" / "out"
        with pytest.raises(RuntimeError), OutputFolder(target) as out:
            out.temp("a.txt").write_text("partial")
            raise RuntimeError("boom")
        assert not (tmp_path / "new").exists()

    def test_abort_keeps_an_existing_folder_and_its_files(self, tmp_path):
        (tmp_path / "keep.txt").write_text("mine")
        with pytest.raises(RuntimeError), OutputFolder(tmp_path) as out:
            out.temp("a.txt").write_text("partial")
            raise RuntimeError("boom")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

    def test_output_path_that_is_a_file(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(OutputError, match="is a file"):
            check_output_folder(tmp_path / "f")
        with pytest.raises(OutputError, match="is a file"):
            check_output_folder(tmp_path / "f" / "sub")

    def test_a_folder_in_the_way_of_an_output(self, tmp_path):
        (tmp_path / "morph.mp4").mkdir()
        with pytest.raises(OutputError, match="not written by diffmorph"):
            check_output_folder(tmp_path, ["morph.mp4"])


FIXTURES = Path(__file__).parent / "fixtures"


def small_result(height: int = 12, width: int = 10, images: int = 2, loop: bool = False) -> MorphResult:
    generator = torch.Generator().manual_seed(0)
    pictures = [from_uint16(to_uint16(torch.rand(1, 3, height, width, generator=generator) * 2 - 1))
                for _ in range(images)]
    segments = [Segment(maps=torch.randn(16, 84, 84, generator=generator) * 0.1, losses=[0.3, 0.2, 0.1],
                        fit_seconds=1.5) for _ in range(images - 1 + loop)]
    return MorphResult(images=pictures, segments=segments, config=MorphConfig(steps=3), loop=loop,
                       source_sizes=[(width, height), (2 * width, height)] + [(width, height)] * (images - 2))


class TestMapsFile:
    @pytest.mark.parametrize(("images", "loop"), [(2, False), (3, True)])
    def test_round_trip(self, tmp_path, images, loop):
        result = small_result(images=images, loop=loop)
        moved = Alignment(1.25, (0.1, -0.05), 7.5, 12.0)
        result.segments[0].start = StartRecord("auto", moved, bent=True)  # render shows it again
        result.save(tmp_path / "m.safetensors")
        loaded = MorphResult.load(tmp_path / "m.safetensors")
        assert loaded.segments[0].start == StartRecord("auto", moved, bent=True)
        assert [segment.describe_start() for segment in loaded.segments] == [
            f"{moved.describe()}, then bent region by region", *[None] * (len(result.segments) - 1)]
        assert len(loaded.segments) == len(result.segments) and loaded.loop == loop
        for mine, theirs in zip(loaded.segments, result.segments, strict=True):
            assert torch.equal(mine.maps, theirs.maps)
            assert mine.losses == pytest.approx(theirs.losses) and mine.fit_seconds == theirs.fit_seconds
        assert all(torch.equal(x, y) for x, y in zip(loaded.images, result.images, strict=True))
        assert loaded.config == result.config and loaded.source_sizes == result.source_sizes

    @pytest.mark.parametrize("name", ["pair_v1", "chain_v1"])
    def test_files_of_format_version_1_load_and_render_the_same(self, name):
        # Written by the diffmorph before pairs and chains shared one layout, with the frames it rendered.
        result = MorphResult.load(FIXTURES / f"{name}.safetensors")
        expected = np.load(FIXTURES / f"{name}_frames.npy")
        assert len(result.segments) == (1 if name == "pair_v1" else 3) and result.loop == (name == "chain_v1")
        assert result.segments[0].describe_start() == NOT_RECORDED
        frames = np.stack(list(render(result, frames=4 if name == "pair_v1" else None)))
        assert np.array_equal(frames, expected)

    def test_no_pickle_and_readable_metadata(self, tmp_path):
        small_result().save(tmp_path / "m.safetensors")
        data = (tmp_path / "m.safetensors").read_bytes()
        header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
        meta = header["__metadata__"]
        assert meta["format"] == "diffmorph.maps" and meta["format_version"] == "2"
        assert json.loads(meta["config"])["steps"] == 3
        assert json.loads(meta["sizes"])["frame"] == [10, 12]

    def test_corrupt_file(self, tmp_path):
        small_result().save(tmp_path / "m.safetensors")
        data = (tmp_path / "m.safetensors").read_bytes()
        (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
        with pytest.raises(MapsFileError, match="corrupt"):
            MorphResult.load(tmp_path / "cut.safetensors")
        (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
        with pytest.raises(MapsFileError, match="corrupt"):
            MorphResult.load(tmp_path / "junk.safetensors")

    def test_other_safetensors_and_other_versions(self, tmp_path):
        save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
        with pytest.raises(MapsFileError, match="not a diffmorph maps file"):
            MorphResult.load(tmp_path / "other.safetensors")
        save_file({"x": torch.zeros(2)}, str(tmp_path / "v9.safetensors"),
                  metadata={"format": "diffmorph.maps", "format_version": "9", "diffmorph_version": "9.0"})
        with pytest.raises(MapsFileError, match=r"format version 9.*upgrade diffmorph"):
            MorphResult.load(tmp_path / "v9.safetensors")

    def test_missing_file(self, tmp_path):
        with pytest.raises(MapsFileError, match="no such file"):
            MorphResult.load(Path(tmp_path / "nope.safetensors"))


class _Failing:
    def __init__(self):
        self.added, self.closed = 0, False

    def add(self, frame):
        self.added += 1
        if self.added == 2:
            raise OSError("No space left on device")

    def close(self):
        self.closed = True


def test_background_writer_passes_frames_in_order_and_reports_errors(tmp_path):
    from diffmorph.io.writers import BackgroundWriter

    frames = moving_frames(5)
    writer = BackgroundWriter(PngFramesWriter(tmp_path / "frames"), depth=2)
    for frame in frames:
        writer.add(frame)
    writer.close()
    for index, frame in enumerate(frames):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "frames" / f"frame_{index:05d}.png")), frame)

    failing = _Failing()
    writer = BackgroundWriter(failing, depth=1)
    with pytest.raises(OSError, match="No space"):
        for frame in frames * 3:
            writer.add(frame)
        writer.close()
    assert failing.added == 2  # nothing more is handed to a writer that failed


def local_colour_tables(path: Path) -> list[bool]:
    """For each image in a GIF file, whether it carries its own colour table (GIF89a block layout)."""
    data = Path(path).read_bytes()
    position = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header, screen, global table
    tables = []
    while data[position] != 0x3B:  # trailer
        if data[position] == 0x21:  # extension: label, then sub-blocks
            position += 2
        else:  # image descriptor, its optional table, LZW code size, then sub-blocks
            packed = data[position + 9]
            tables.append(bool(packed & 0x80))
            position += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        while data[position] != 0:
            position += data[position] + 1
        position += 1
    return tables


def test_header_size_reads_the_decoded_size_without_decoding(tmp_path):
    path = tmp_path / "turned.jpg"
    image = Image.fromarray(np.zeros((30, 50, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned a quarter: 30 wide, 50 high
    image.save(path, exif=exif)
    assert header_size(path) == (30, 50) == load_image(path).shape[1::-1]
    assert header_size(np.zeros((7, 9, 3))) == (9, 7)
    (tmp_path / "junk.png").write_text("not an image")
    assert header_size(tmp_path / "junk.png") is None and header_size(tmp_path / "missing.png") is None
