"""Reading input images the way users expect, and fitting one image to another's frame.

Decoded images are ``(H, W, 3)`` float32 arrays in ``[0, 1]`` (sRGB, alpha already composited).
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageColor, ImageOps, UnidentifiedImageError

from diffmorph.config import DEFAULT_MAX_PIXELS
from diffmorph.errors import ConfigError, InputImageError

MIN_SIDE = 4

ImageSource = str | Path | Image.Image | np.ndarray


def parse_colour(name: str) -> tuple[float, float, float]:
    """A colour name or ``#rrggbb`` as RGB floats in ``[0, 1]``.

    >>> parse_colour("#ff8000")
    (1.0, 0.5019607843137255, 0.0)
    """
    try:
        rgb = ImageColor.getrgb(name)[:3]
    except ValueError:
        raise ConfigError(f"unknown colour {name!r}; use a name such as 'white' or a hex code like '#1e1e1e'")\
            from None
    return tuple(channel / 255.0 for channel in rgb)  # type: ignore[return-value]


MAX_FILE_BYTES = 2**30  # the largest input file read: well above any real image, far below the memory it would take


def regular_file(path: Path, name: str, error: type[Exception] = InputImageError,
                 max_bytes: int = MAX_FILE_BYTES) -> int:
    """The size of ``path`` after checking, without opening it, that it is a regular file of at most
    ``max_bytes``: a FIFO, a device or a folder would hang or never end a read.

    Raises:
        ``error``: naming ``name`` and what is wrong.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{name}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or \
            stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file"
        raise error(f"{name}: is {kind}, not a regular file; give a file")
    if info.st_size > max_bytes:
        raise error(f"{name}: the file is {_megabytes(info.st_size)}; the limit is {_megabytes(max_bytes)}")
    return info.st_size


def _megabytes(size: int) -> str:
    """
    >>> _megabytes(3 * 2**20), _megabytes(2**30)
    ('3.0 MB', '1024.0 MB')
    """
    return f"{size / 2**20:.1f} MB"


def load_image(source: ImageSource, *, background: str = "white", max_pixels: int = DEFAULT_MAX_PIXELS,
               label: str = "image") -> np.ndarray:
    """Decode an image to ``(H, W, 3)`` float32 in ``[0, 1]``.

    Honours EXIF orientation and embedded colour profiles (converted to sRGB); handles greyscale,
    palette, 16-bit and CMYK files; composites transparency onto ``background``.

    Args:
        source: a path, a PIL image, or an array ``(H, W)``, ``(H, W, 1|3|4)`` of uint8, uint16 or
            floats in ``[0, 1]``.
        background: colour under transparent pixels.
        max_pixels: refuse larger images (decompression-bomb guard).
        label: how errors name this input ("A", "B").

    Raises:
        InputImageError: missing, empty, not an image, truncated, too large or too small.
    """
    bg = parse_colour(background)
    if isinstance(source, np.ndarray):
        return _check_size(_array_to_rgb(source, bg, label), label, max_pixels)
    if isinstance(source, Image.Image):
        return _check_size(_pil_to_rgb(source, bg, label), label, max_pixels)
    if not isinstance(source, (str, Path)):
        raise InputImageError(f"{label}: expected a path, a PIL image or a numpy array, got {type(source).__name__}")
    path = Path(source)
    name = f"{label} ({path})"
    regular_file(path, name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputImageError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    if not data:
        raise InputImageError(f"{name}: the file is empty (0 bytes)")
    _reject_zero_size_png(data, name)
    with warnings.catch_warnings():
        # Size is checked below against our own limit; Pillow's warning would only duplicate it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise InputImageError(f"{name}: the image is too large to decode safely (decompression bomb)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InputImageError(f"{name}: not an image file that can be read (try PNG, JPEG, WebP, TIFF, "
                                  f"BMP or GIF)") from None
        width, height = image.size
        if width * height > max_pixels:
            raise InputImageError(f"{name}: {width} x {height} = {width * height:,} pixels is over the limit of "
                                  f"{max_pixels:,}; downscale it or raise --max-pixels")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise InputImageError(f"{name}: the file is truncated or corrupt ({exc}); re-export it") from None
    return _check_size(_pil_to_rgb(image, bg, name), name, max_pixels)


def header_size(source: ImageSource) -> tuple[int, int] | None:
    """``(width, height)`` of an image as :func:`load_image` would decode it (EXIF orientation applied), read from
    a file's header without decoding its pixels; None where the header cannot be read (decoding then says why).

    Sizes are known this way before any memory is spent, so a request can be refused at once.
    """
    if isinstance(source, np.ndarray):
        return (source.shape[1], source.shape[0]) if source.ndim >= 2 else None
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, Path)):
        try:
            regular_file(Path(source), "image")
            image = Image.open(source)
        except (InputImageError, UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError):
            return None
    else:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        width, height = image.size
        try:
            turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
        except (OSError, SyntaxError, ValueError, struct.error):
            turned = False
    if image is not source:
        image.close()
    return (height, width) if turned else (width, height)


def _reject_zero_size_png(data: bytes, name: str) -> None:
    # Pillow reports a PNG declaring 0 x N pixels as "cannot identify"; say what is actually wrong.
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise InputImageError(f"{name}: the image has zero size ({width} x {height} pixels)")


def _check_size(rgb: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if not np.isfinite(rgb).all():
        raise InputImageError(f"{name}: the image holds NaN or infinite pixel values; re-export it")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise InputImageError(f"{name}: the image has zero size ({width} x {height} pixels)")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputImageError(f"{name}: {width} x {height} pixels is too small; diffmorph needs at least "
                              f"{MIN_SIDE} x {MIN_SIDE}")
    if height * width > max_pixels:
        raise InputImageError(f"{name}: {width} x {height} = {width * height:,} pixels is over the limit of "
                              f"{max_pixels:,}; downscale it or raise --max-pixels")
    return rgb


def _pil_to_rgb(image: Image.Image, background: tuple[float, float, float], name: str) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    image = _to_srgb(image)
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit and 32-bit greyscale: Pillow's convert("RGB") would clip at 255, so scale ourselves.
        values = np.asarray(image).astype(np.float32)
        peak = 1.0 if mode == "F" else (65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0)
        grey = np.clip(values / peak, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    try:
        converted = image.convert("RGBA" if has_alpha else "RGB")
    except (ValueError, OSError) as exc:
        raise InputImageError(f"{name}: cannot convert its {mode} pixels to RGB ({exc})") from None
    array = np.asarray(converted).astype(np.float32) / 255.0
    return _composite(array, background)


def _to_srgb(image: Image.Image) -> Image.Image:
    # Photos from phones and print workflows carry colour profiles (Display P3, CMYK press profiles);
    # ignoring them shifts colours. A broken profile is ignored rather than failing the morph.
    profile = image.info.get("icc_profile")
    if not profile or image.mode not in ("RGB", "CMYK", "RGBA", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        srgb = ImageCms.createProfile("sRGB")
        if image.mode == "RGBA":
            alpha = image.getchannel("A")
            rgb = ImageCms.profileToProfile(image.convert("RGB"), source, srgb, outputMode="RGB")
            rgb.putalpha(alpha)
            return rgb
        return ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def _array_to_rgb(array: np.ndarray, background: tuple[float, float, float], name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputImageError(f"{name}: an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                              f"got {array.shape}")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise InputImageError(f"{name}: float image arrays must hold finite values in [0, 1]")
    else:
        raise InputImageError(f"{name}: unsupported array dtype {array.dtype}; use uint8, uint16 or floats in [0, 1]")
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return _composite(values, background)


def _composite(array: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    if array.shape[2] == 3:
        return np.ascontiguousarray(array)
    alpha = array[..., 3:4]
    bg = np.asarray(background, dtype=np.float32)
    return np.ascontiguousarray(array[..., :3] * alpha + bg * (1.0 - alpha))


@dataclass(frozen=True)
class Framing:
    """How B was fitted to A's frame, for logs and the config file."""

    method: str
    source_size: tuple[int, int]  # (width, height) of B as decoded
    frame_size: tuple[int, int]  # (width, height) of A

    def describe(self, subject: str = "B", reference: str = "A") -> str:
        (sw, sh), (fw, fh) = self.source_size, self.frame_size
        if self.source_size == self.frame_size:
            return f"{subject} matches {reference}'s {fw} x {fh} frame"
        how = {"crop": "scaled to cover it and centre-cropped", "pad": "scaled to fit inside it and padded",
               "stretch": "stretched to it (aspect ratio not kept)"}[self.method]
        return f"{subject} ({sw} x {sh}) fitted to {reference}'s {fw} x {fh} frame: {how} (--fit {self.method})"


def fit_to_frame(image: np.ndarray, width: int, height: int, method: str,
                 background: str = "white") -> tuple[np.ndarray, Framing]:
    """Fit an image to a ``width`` x ``height`` frame.

    Args:
        image: ``(h, w, 3)`` float32 in ``[0, 1]``.
        method: "crop" (cover the frame, crop the overflow), "pad" (fit inside, pad with
            ``background``) or "stretch" (resize to the frame, ignoring aspect ratio).

    Returns:
        ``(height, width, 3)`` float32 in ``[0, 1]``, and how it was done.
    """
    src_h, src_w = image.shape[:2]
    framing = Framing(method=method, source_size=(src_w, src_h), frame_size=(width, height))
    if (src_h, src_w) == (height, width):
        return image, framing
    if method == "stretch":
        return _resize(image, height, width), framing
    if method == "crop":
        scale = max(width / src_w, height / src_h)
    elif method == "pad":
        scale = min(width / src_w, height / src_h)
    else:
        raise ConfigError(f"unknown fit {method!r}; choose one of: crop, pad, stretch")
    new_w = max(1, min(width, round(src_w * scale))) if method == "pad" else max(width, round(src_w * scale))
    new_h = max(1, min(height, round(src_h * scale))) if method == "pad" else max(height, round(src_h * scale))
    scaled = _resize(image, new_h, new_w)
    if method == "crop":
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return np.ascontiguousarray(scaled[top:top + height, left:left + width]), framing
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = np.asarray(parse_colour(background), dtype=np.float32)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = scaled
    return canvas, framing


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(tensor, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous().numpy()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` in ``[0, 1]`` to the method's ``(1, 3, H, W)`` in ``[-1, 1]``, at 16-bit precision.

    Quantising to 16 bits makes the tensor exactly what a maps file stores, so re-rendering from a
    maps file reproduces a morph's frames bit for bit.
    """
    levels = np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return from_uint16(torch.from_numpy(levels).permute(2, 0, 1).unsqueeze(0))


def from_uint16(levels: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` uint16 levels to floats in ``[-1, 1]``."""
    return levels.to(torch.float32) / 32767.5 - 1.0


def to_uint16(image: torch.Tensor) -> torch.Tensor:
    """Floats in ``[-1, 1]`` to uint16 levels; the inverse of :func:`from_uint16` on its outputs."""
    return ((image.to(torch.float64) + 1.0) * 32767.5).round().clamp(0, 65535).to(torch.uint16)
