"""The maps file: everything re-rendering needs, in safetensors (no pickle), with JSON metadata.

One layout for a pair and a chain (a pair is a chain of one segment). Format version 2:

=============  ==========================  ==============================================
tensor         dtype, shape                 meaning
=============  ==========================  ==============================================
``maps``       float32 ``(S, 16, h, w)``    raw maps per segment: A->B mult, add, warp (y, x); then B->A
``images``     uint16 ``(K, 3, H, W)``      the images in order, RGB, level ``v`` means ``v / 32767.5 - 1``;
                                            every one after the first already fitted to the first's frame
``losses``     float32 ``(S, steps)``       each segment's fit loss at every step
=============  ==========================  ==============================================

Segment ``k`` morphs image ``k`` into image ``k + 1``; with ``loop`` a last segment morphs the last image
into the first, so ``S = K - 1 + loop``. Metadata (all strings): ``format`` = ``"diffmorph.maps"``,
``format_version`` = ``"2"``, ``diffmorph_version``, ``config`` (JSON of
:class:`~diffmorph.config.MorphConfig`), ``loop`` (``"true"`` or ``"false"``), ``sizes`` (JSON: ``frame`` as
``[width, height]`` and ``sources``, each image's own size before fitting), ``fit_seconds`` (JSON list,
one per segment), ``start_records`` (JSON list, one per segment: what its warp started from, as
:meth:`~diffmorph.start.StartRecord.to_dict` gives it) and ``starts`` (the same as lines of text, or null
where it started from nothing, for readers older than the records). Files written before either existed lack
them.

Files of version 1 still load: a pair's (``maps`` ``(16, h, w)``, ``image_a``, ``image_b``, ``losses``
``(steps,)``) and a chain's (format ``"diffmorph.sequence"``).
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffmorph.config import MorphConfig
from diffmorph.errors import DiffmorphError, MapsFileError
from diffmorph.io.images import regular_file
from diffmorph.start.record import StartRecord

FORMAT = "diffmorph.maps"
FORMAT_VERSION = 2
SEQUENCE_FORMAT_V1 = "diffmorph.sequence"  # chains' files of version 1


@dataclass(frozen=True)
class MapsFileContents:
    """A maps file's contents; shapes as in the module's table."""

    maps: torch.Tensor  # (S, 16, h, w) float32
    images: torch.Tensor  # (K, 3, H, W) uint16
    losses: torch.Tensor  # (S, steps) float32
    config: MorphConfig
    loop: bool
    source_sizes: tuple[tuple[int, int], ...]  # (width, height) of each image as decoded
    fit_seconds: tuple[float, ...]  # one per segment
    starts: tuple[StartRecord, ...] | None = None  # one per segment; None: not recorded


def write_maps_file(path: Path, contents: MapsFileContents, version: str) -> None:
    """Write a maps file at ``path`` (the caller picks a temporary name)."""
    height, width = contents.images.shape[-2:]
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "diffmorph_version": version,
        "config": json.dumps(contents.config.to_dict()),
        "loop": "true" if contents.loop else "false",
        "sizes": json.dumps({"frame": [width, height], "sources": [list(size) for size in contents.source_sizes]}),
        "fit_seconds": json.dumps([None if math.isnan(s) else s for s in contents.fit_seconds]),
    }
    if contents.starts is not None:
        metadata["start_records"] = json.dumps([start.to_dict() for start in contents.starts])
        metadata["starts"] = json.dumps([start.describe() for start in contents.starts])
    tensors = {"maps": contents.maps.contiguous(), "images": contents.images.contiguous(),
               "losses": contents.losses.contiguous()}
    save_safetensors(path, tensors, metadata)


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with the permissions of every other output.

    safetensors creates files readable by the owner only; this gives them what the umask allows.
    """
    try:
        save_file(tensors, str(path), metadata=metadata)
    except (OSError, SafetensorError) as exc:
        path.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise OSError(getattr(exc, "errno", None) or errno.EIO, reason, str(path)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_maps_file(path: str | Path) -> MapsFileContents:
    """Read and check a maps file of any version this diffmorph knows.

    Raises:
        MapsFileError: missing, corrupt, not a diffmorph maps file, or of a newer format version.
    """
    path = Path(path)
    regular_file(path, f"maps file {path}", MapsFileError)
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata: dict[str, str] = handle.metadata() or {}
            layout = _layout(path, metadata)
            missing = set(layout) - set(handle.keys())
            if missing:
                raise MapsFileError(f"maps file {path} is incomplete (missing {', '.join(sorted(missing))}); "
                                    f"re-run diffmorph morph")
            tensors = {name: handle.get_tensor(name) for name in layout}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MapsFileError(f"maps file {path} is corrupt or not a safetensors file ({_first_line(exc)})") from None
    try:
        config = MorphConfig.from_dict(json.loads(metadata["config"])).validate()
        if "image_a" in tensors:
            contents = _from_pair_v1(tensors, metadata, config)
        elif metadata.get("format") == SEQUENCE_FORMAT_V1:
            contents = _from_sequence_v1(tensors, metadata, config)
        else:
            contents = _from_v2(tensors, metadata, config)
    except (KeyError, TypeError, ValueError, IndexError, DiffmorphError) as exc:
        raise MapsFileError(f"maps file {path} has corrupt metadata ({_first_line(exc)})") from None
    _check(path, contents)
    return contents


def _check_header_size(path: Path) -> None:
    """A safetensors file starts with its header's length: refuse one that claims more than the file holds or
    more than any maps file needs, before a reader allocates it."""
    with open(path, "rb") as file:
        head = file.read(8)
    size = path.stat().st_size
    length = int.from_bytes(head, "little") if len(head) == 8 else -1
    if length < 2 or length > min(size - 8, 2**20):
        raise MapsFileError(f"maps file {path} is not a safetensors file, or its header is corrupt; give the "
                            f"maps.safetensors that diffmorph morph wrote")


def _layout(path: Path, metadata: dict[str, str]) -> tuple[str, ...]:
    """The tensors a file of this format and version holds."""
    kind, version = metadata.get("format"), metadata.get("format_version", "?")
    if kind not in (FORMAT, SEQUENCE_FORMAT_V1):
        raise MapsFileError(f"{path} is a safetensors file but not a diffmorph maps file")
    if version.isdigit() and int(version) > FORMAT_VERSION:
        raise MapsFileError(f"maps file {path} has format version {version} (written by diffmorph "
                            f"{metadata.get('diffmorph_version', '?')}); this diffmorph reads up to version "
                            f"{FORMAT_VERSION}: upgrade diffmorph")
    if version == "1":
        return ("maps", "images", "losses") if kind == SEQUENCE_FORMAT_V1 else ("maps", "image_a", "image_b", "losses")
    if version == str(FORMAT_VERSION) and kind == FORMAT:
        return "maps", "images", "losses"
    raise MapsFileError(f"maps file {path} has an unknown format version {version!r}; re-run diffmorph morph")


def _from_v2(tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: MorphConfig) -> MapsFileContents:
    sizes: dict[str, Any] = json.loads(metadata["sizes"])
    seconds = json.loads(metadata["fit_seconds"])
    starts = None
    if "start_records" in metadata:
        starts = [StartRecord.from_dict(record) for record in json.loads(metadata["start_records"])]
    elif "starts" in metadata:  # written before the records: lines only
        lines = json.loads(metadata["starts"])
        if not isinstance(lines, list) or not all(line is None or isinstance(line, str) for line in lines):
            raise ValueError("its starts are not lines of text")
        starts = [StartRecord(config.align, line=line) for line in lines]
    return MapsFileContents(maps=tensors["maps"], images=tensors["images"], losses=tensors["losses"], config=config,
                            loop=metadata["loop"] == "true",
                            source_sizes=tuple((int(w), int(h)) for w, h in sizes["sources"]),
                            fit_seconds=tuple(math.nan if s is None else float(s) for s in seconds),
                            starts=None if starts is None else tuple(starts))


def _from_pair_v1(tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: MorphConfig
                  ) -> MapsFileContents:
    sizes: dict[str, Any] = json.loads(metadata["sizes"])
    frame = tuple(int(v) for v in sizes["frame"])
    source = (int(sizes["b_source"][0]), int(sizes["b_source"][1]))
    if tensors["image_b"].shape != tensors["image_a"].shape:
        raise ValueError("its two images differ in size")
    return MapsFileContents(maps=tensors["maps"][None], images=torch.stack((tensors["image_a"], tensors["image_b"])),
                            losses=tensors["losses"][None], config=config, loop=False, source_sizes=(frame, source),
                            fit_seconds=(float(metadata.get("fit_seconds", "nan")),))


def _from_sequence_v1(tensors: dict[str, torch.Tensor], metadata: dict[str, str], config: MorphConfig
                      ) -> MapsFileContents:
    images, maps = tensors["images"], tensors["maps"]
    height, width = images.shape[-2:]
    return MapsFileContents(maps=maps, images=images, losses=tensors["losses"], config=config,
                            loop=metadata.get("loop") == "true", source_sizes=((width, height),) * images.shape[0],
                            fit_seconds=(math.nan,) * maps.shape[0])


def _check(path: Path, contents: MapsFileContents) -> None:
    """Shapes, types and values before anything is rendered from them."""
    maps, images, losses = contents.maps, contents.images, contents.losses
    if (maps.dim() != 4 or maps.shape[1] != 16 or maps.dtype != torch.float32 or maps.shape[-1] < 2
            or maps.shape[-2] < 2 or images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint16
            or losses.dim() != 2 or losses.dtype != torch.float32):
        raise MapsFileError(f"maps file {path} is corrupt: unexpected tensor shapes or types")
    segments = images.shape[0] - 1 + contents.loop
    if segments < 1 or maps.shape[0] != segments or losses.shape[0] != segments:
        raise MapsFileError(f"maps file {path} is corrupt: {maps.shape[0]} segments for {images.shape[0]} images")
    if (len(contents.source_sizes) != images.shape[0] or len(contents.fit_seconds) != segments
            or (contents.starts is not None and len(contents.starts) != segments)):
        raise MapsFileError(f"maps file {path} has corrupt metadata (sizes or fit times for another count)")
    if min(images.shape[-2:]) < 4:
        raise MapsFileError(f"maps file {path} is corrupt: its images are too small ({images.shape[-1]} x "
                            f"{images.shape[-2]} pixels)")
    if not torch.isfinite(maps).all():
        raise MapsFileError(f"maps file {path} is corrupt: its maps hold NaN or infinite values")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
