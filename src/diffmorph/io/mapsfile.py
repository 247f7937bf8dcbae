"""The maps file: everything re-rendering needs, in safetensors (no pickle), with JSON metadata.

Layout (format version 1):

=============  ==========================  ==============================================
tensor         dtype, shape                 meaning
=============  ==========================  ==============================================
``maps``       float32 ``(16, h, w)``       raw maps: A->B mult, add, warp (y, x); then B->A
``image_a``    uint16 ``(3, H, W)``         A, RGB, level ``v`` means ``v / 32767.5 - 1``
``image_b``    uint16 ``(3, H, W)``         B already fitted to A's frame, same encoding
``losses``     float32 ``(steps,)``         the fit's loss at every step
=============  ==========================  ==============================================

Metadata (all strings): ``format`` = ``"diffmorph.maps"``, ``format_version`` = ``"1"``,
``diffmorph_version``, ``config`` (JSON of :class:`~diffmorph.config.MorphConfig`), ``sizes`` (JSON:
``frame`` and ``b_source`` as ``[width, height]``, ``maps`` as ``[w, h]``), ``fit_seconds``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffmorph.config import MorphConfig
from diffmorph.errors import DiffmorphError, MapsFileError

FORMAT = "diffmorph.maps"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class MapsFileContents:
    maps: torch.Tensor  # (16, h, w) float32
    image_a: torch.Tensor  # (3, H, W) uint16
    image_b: torch.Tensor  # (3, H, W) uint16
    losses: torch.Tensor  # (steps,) float32
    config: MorphConfig
    b_source_size: tuple[int, int]
    fit_seconds: float


def write_maps_file(path: Path, contents: MapsFileContents, version: str) -> None:
    """Write a maps file at ``path`` (the caller picks a temporary name)."""
    height, width = contents.image_a.shape[-2:]
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "diffmorph_version": version,
        "config": json.dumps(contents.config.to_dict()),
        "sizes": json.dumps({"frame": [width, height], "b_source": list(contents.b_source_size),
                             "maps": [contents.maps.shape[-1], contents.maps.shape[-2]]}),
        "fit_seconds": repr(contents.fit_seconds),
    }
    tensors = {"maps": contents.maps.contiguous(), "image_a": contents.image_a.contiguous(),
               "image_b": contents.image_b.contiguous(), "losses": contents.losses.contiguous()}
    save_safetensors(path, tensors, metadata)


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with the permissions of every other output.

    safetensors creates files readable by the owner only; this gives them what the umask allows.
    """
    save_file(tensors, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def read_maps_file(path: str | Path) -> MapsFileContents:
    """Read and check a maps file.

    Raises:
        MapsFileError: missing, corrupt, not a diffmorph maps file, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise MapsFileError(f"maps file {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata: dict[str, str] = handle.metadata() or {}
            _check_header(path, metadata)
            names = set(handle.keys())
            missing = {"maps", "image_a", "image_b", "losses"} - names
            if missing:
                raise MapsFileError(f"maps file {path} is incomplete (missing {', '.join(sorted(missing))}); "
                                    f"re-run diffmorph morph")
            tensors = {name: handle.get_tensor(name) for name in ("maps", "image_a", "image_b", "losses")}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MapsFileError(f"maps file {path} is corrupt or not a safetensors file ({_first_line(exc)})") from None
    try:
        config = MorphConfig.from_dict(json.loads(metadata["config"])).validate()
        sizes: dict[str, Any] = json.loads(metadata["sizes"])
        b_source = (int(sizes["b_source"][0]), int(sizes["b_source"][1]))
        fit_seconds = float(metadata.get("fit_seconds", "nan"))
    except (KeyError, TypeError, ValueError, IndexError, DiffmorphError) as exc:
        raise MapsFileError(f"maps file {path} has corrupt metadata ({_first_line(exc)})") from None
    maps, image_a, image_b = tensors["maps"], tensors["image_a"], tensors["image_b"]
    if (maps.dim() != 3 or maps.shape[0] != 16 or maps.dtype != torch.float32 or image_a.dtype != torch.uint16
            or image_a.dim() != 3 or image_a.shape[0] != 3 or image_b.shape != image_a.shape
            or image_b.dtype != torch.uint16):
        raise MapsFileError(f"maps file {path} is corrupt: unexpected tensor shapes or types")
    if not torch.isfinite(maps).all():
        raise MapsFileError(f"maps file {path} is corrupt: its maps hold NaN or infinite values")
    return MapsFileContents(maps=maps, image_a=image_a, image_b=image_b, losses=tensors["losses"],
                            config=config, b_source_size=b_source, fit_seconds=fit_seconds)


def _check_header(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != FORMAT:
        raise MapsFileError(f"{path} is a safetensors file but not a diffmorph maps file")
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise MapsFileError(f"maps file {path} has format version {version} (written by diffmorph "
                            f"{metadata.get('diffmorph_version', '?')}); this diffmorph reads version "
                            f"{FORMAT_VERSION}: re-run diffmorph morph on the images")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
