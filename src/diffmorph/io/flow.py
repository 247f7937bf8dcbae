"""Writing the fitted correspondence as optical-flow files that other tools read.

Layout of both files (the usual forward-flow convention of optical-flow tools, not the backward
``(dy, dx)`` maps of :mod:`diffmorph.ops`): an ``(H, W, 2)`` float32 field on the first image's pixel
grid, channel 0 = dx and channel 1 = dy in pixels, so pixel ``(x, y)`` of the first image
corresponds to ``(x + dx, y + dy)`` in the second.

- ``.npy``: that array, as ``numpy.save`` writes it.
- ``.flo``: the Middlebury format: the float ``202021.25`` (bytes ``PIEH``), width and height as
  int32, then ``dx, dy`` interleaved row by row as float32, all little-endian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffmorph.ops import flow_from_warp_map, resize, sampling_grid

FLO_MAGIC = 202021.25


def write_npy(path: Path, flow: np.ndarray) -> None:
    """Write an ``(H, W, 2)`` (dx, dy) flow with ``numpy.save`` to exactly ``path``."""
    with open(path, "wb") as file:
        np.save(file, _checked(flow))


def write_flo(path: Path, flow: np.ndarray) -> None:
    """Write an ``(H, W, 2)`` (dx, dy) flow in the Middlebury ``.flo`` format."""
    flow = _checked(flow)
    height, width = flow.shape[:2]
    with open(path, "wb") as file:
        file.write(np.array([FLO_MAGIC], "<f4").tobytes())
        file.write(np.array([width, height], "<i4").tobytes())
        file.write(flow.astype("<f4").tobytes())


def read_flo(path: Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file into an ``(H, W, 2)`` float32 array.

    Raises:
        ValueError: not a ``.flo`` file.
    """
    data = Path(path).read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != FLO_MAGIC:
        raise ValueError(f"{path} is not a .flo file")
    width, height = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).copy()


def _checked(flow: np.ndarray) -> np.ndarray:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"a flow must be (H, W, 2), got {flow.shape}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def forward_flows(maps: torch.Tensor, warp_scale: float, height: int, width: int) -> dict[str, np.ndarray]:
    """A segment's fitted correspondence as forward flows in this module's layout, at ``height`` x ``width``.

    The B->A warp is a backward map on A's grid (A at ``p`` shows B at ``p - flow``), so the forward flow
    from A to B is its negation, exactly; likewise B to A from the A->B warp.

    Args:
        maps: ``(16, h, w)`` raw maps (:mod:`diffmorph.ops` layout).
        warp_scale: the config's ``warp_scale``.

    Returns:
        ``{"a_to_b": (H, W, 2), "b_to_a": (H, W, 2)}`` float32 arrays, channel 0 = dx, 1 = dy.
    """
    warps = maps.view(2, 8, *maps.shape[-2:])[:, 6:8]  # (2, 2, h, w): A->B, B->A, (dy, dx)
    grids = sampling_grid(flow_from_warp_map(resize(warps, height, width), warp_scale))  # (2, H, W, 2): (x, y)
    identity = sampling_grid(torch.zeros(1, 2, height, width, device=maps.device))
    flows = {}
    for name, index in (("a_to_b", 1), ("b_to_a", 0)):
        offsets = grids[index:index + 1] - identity  # (1, H, W, 2): normalized sample offsets = -(dx, dy)
        pixels = offsets[0] * torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], device=offsets.device)
        flows[name] = pixels.float().cpu().numpy()
    return flows
