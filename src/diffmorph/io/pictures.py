"""Still pictures for people: the labelled maps and a contact sheet of frames."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diffmorph.ops import MULT_FLOOR, MapScales, flow_from_warp_map, length, resize

_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)
_LABEL_HEIGHT = 22
_GAP = 8


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow: hue is the direction, saturation the length; white means no motion.

    Args:
        flow: ``(2, H, W)`` in pixels, channel 0 = dy, channel 1 = dx.
        max_magnitude: length shown fully saturated; the flow's largest by default.

    Returns:
        ``(H, W, 3)`` uint8.

    >>> flow_to_rgb(np.zeros((2, 1, 1), np.float32)).tolist()
    [[[255, 255, 255]]]
    """
    dy, dx = flow[0], flow[1]
    magnitude = np.hypot(dx, dy)
    peak = float(magnitude.max()) if max_magnitude is None else max_magnitude
    saturation = np.clip(magnitude / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(magnitude)
    hue = (np.arctan2(-dy, -dx) / (2 * np.pi)) % 1.0  # angle measured counter-clockwise on screen
    # HSV to RGB at full value: each channel falls from 1 towards 1 - saturation around the hue circle.
    sector = hue * 6.0
    channels = [np.clip(np.abs((sector + shift) % 6.0 - 3.0) - 1.0, 0.0, 1.0) for shift in (0.0, 4.0, 2.0)]
    rgb = 1.0 - saturation[..., None] * (1.0 - np.stack(channels, axis=-1))
    return (rgb * 255.0).round().astype(np.uint8)


def _font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _labelled(tile: np.ndarray, label: str) -> Image.Image:
    height, width = tile.shape[:2]
    canvas = Image.new("RGB", (width, height + _LABEL_HEIGHT), _BACKGROUND)
    canvas.paste(Image.fromarray(tile), (0, _LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 3), label, fill=_TEXT, font=_font())
    return canvas


def _grid(tiles: list[list[Image.Image]]) -> Image.Image:
    rows, cols = len(tiles), len(tiles[0])
    cell_w, cell_h = tiles[0][0].size
    sheet = Image.new("RGB", (cols * cell_w + (cols + 1) * _GAP, rows * cell_h + (rows + 1) * _GAP), _BACKGROUND)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet.paste(tile, (_GAP + c * (cell_w + _GAP), _GAP + r * (cell_h + _GAP)))
    return sheet


def maps_picture(maps: torch.Tensor, frame_width: int, frame_height: int, scales: MapScales,
                 tile_width: int = 256) -> Image.Image:
    """The six maps as a labelled 2 x 3 picture: rows A->B and B->A; columns mult, add, warp.

    Mult shows the colour factor (mid grey = x1, darker removes, brighter amplifies); add shows the
    colour offset (mid grey = none); warp shows direction as hue and length as saturation, with the
    longest displacement in pixels of the output frame in its label.

    Args:
        maps: ``(16, h, w)`` raw maps.
        frame_width, frame_height: the output frame, for the aspect ratio and the warp's pixels.
    """
    tile_height = max(1, round(tile_width * frame_height / frame_width))
    tiles = resize(maps.unsqueeze(0).float(), tile_height, tile_width)[0]  # (16, th, tw)
    rows = []
    for name, offset in (("A to B", 0), ("B to A", 8)):
        direction = tiles[offset:offset + 8]
        factor = torch.clamp(1.0 + direction[0:3] * scales.mult, min=MULT_FLOOR)
        mult = (factor * 0.5).clamp(0, 1)
        add = (0.5 + direction[3:6] * scales.add).clamp(0, 1)
        warp_map = resize(maps[offset + 6:offset + 8].unsqueeze(0).float(), frame_height, frame_width)
        longest = length(flow_from_warp_map(warp_map, scales.warp)).max().item()
        flow = flow_from_warp_map(direction[6:8].unsqueeze(0), scales.warp)[0].numpy()
        as_u8 = [(x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for x in (mult, add)]
        rows.append([
            _labelled(as_u8[0], f"{name} mult (colour factor)"),
            _labelled(as_u8[1], f"{name} add (colour offset)"),
            _labelled(flow_to_rgb(flow), f"{name} warp (max {longest:.0f} px)"),
        ])
    return _grid(rows)


def contact_sheet(frames: list[tuple[str, np.ndarray]], tile_width: int = 320) -> Image.Image:
    """A row of labelled frames.

    Args:
        frames: ``(label, frame)`` pairs, frames ``(H, W, 3)`` uint8, all of one size.
    """
    height, width = frames[0][1].shape[:2]
    tile_width = min(tile_width, width)
    tile_height = max(1, round(tile_width * height / width))
    tiles = [_labelled(np.asarray(Image.fromarray(frame).resize((tile_width, tile_height), Image.Resampling.LANCZOS)),
                       label) for label, frame in frames]
    return _grid([tiles])
