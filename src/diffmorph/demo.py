"""The built-in demo pair, drawn in code: a sunset that becomes a moonlit night.

It exercises all three maps: the sun travels and becomes the moon (warp), the sky changes colour
(mult), and stars appear where there were none (add). No file is downloaded.
"""

from __future__ import annotations

import numpy as np

DEMO_SIZE = (480, 360)  # (width, height): deliberately not square


def _smoothstep(edge: float, x: np.ndarray, softness: float) -> np.ndarray:
    return np.clip((x - edge) / softness + 0.5, 0.0, 1.0)


def _scene(width: int, height: int, *, sky_top, sky_bottom, body_xy, body_radius, body_colour, hills_phase,
           hills_colour, stars: bool) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / (width - 1), ys / (height - 1)  # 0..1 across and down
    sky = np.asarray(sky_top, np.float32) * (1 - v[..., None]) + np.asarray(sky_bottom, np.float32) * v[..., None]
    image = sky
    if stars:
        rng = np.random.default_rng(7)
        for sx, sy, r in zip(rng.uniform(0, 1, 40), rng.uniform(0, 0.55, 40), rng.uniform(0.8, 2.0, 40), strict=True):
            distance = np.hypot((u - sx) * width, (v - sy) * height)
            image = image + (1 - _smoothstep(r, distance, 1.0))[..., None] * 0.8
    bx, by = body_xy
    distance = np.hypot((u - bx) * width, (v - by) * height)
    glow = np.exp(-(distance / (body_radius * 2.5)) ** 2)[..., None] * 0.35
    disc = (1 - _smoothstep(body_radius, distance, 1.5))[..., None]
    image = image + glow * np.asarray(body_colour, np.float32)
    image = image * (1 - disc) + disc * np.asarray(body_colour, np.float32)
    ridge = 0.68 + 0.07 * np.sin(u * 7.0 + hills_phase) + 0.04 * np.sin(u * 17.0 + 2 * hills_phase)
    land = _smoothstep(0.0, (v - ridge) * height, 1.5)[..., None]
    shade = np.asarray(hills_colour, np.float32) * (1.0 - 0.5 * (v[..., None] - 0.6))
    image = image * (1 - land) + land * shade
    return np.clip(image, 0.0, 1.0)


def demo_images(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1]) -> list[np.ndarray]:
    """Three scenes for chains: the demo's sunset and night, then a dawn, ``(H, W, 3)`` float32 in ``[0, 1]``.

    >>> [image.shape for image in demo_images(32, 24)]
    [(24, 32, 3), (24, 32, 3), (24, 32, 3)]
    """
    dawn = _scene(width, height, sky_top=(0.45, 0.62, 0.9), sky_bottom=(0.98, 0.78, 0.7),
                  body_xy=(0.82, 0.62), body_radius=0.08 * height, body_colour=(1.0, 0.85, 0.6),
                  hills_phase=2.4, hills_colour=(0.2, 0.3, 0.22), stars=False)
    return [*demo_pair(width, height), dawn]


def demo_pair(width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1]) -> tuple[np.ndarray, np.ndarray]:
    """The demo's two images as ``(H, W, 3)`` float32 arrays in ``[0, 1]``.

    >>> a, b = demo_pair(64, 48)
    >>> a.shape, b.shape, bool(abs(a - b).mean() > 0.1)
    ((48, 64, 3), (48, 64, 3), True)
    """
    sunset = _scene(width, height, sky_top=(0.98, 0.55, 0.25), sky_bottom=(0.99, 0.85, 0.55),
                    body_xy=(0.3, 0.5), body_radius=0.09 * height, body_colour=(1.0, 0.93, 0.45),
                    hills_phase=0.0, hills_colour=(0.35, 0.18, 0.22), stars=False)
    night = _scene(width, height, sky_top=(0.02, 0.04, 0.16), sky_bottom=(0.12, 0.2, 0.42),
                   body_xy=(0.72, 0.24), body_radius=0.07 * height, body_colour=(0.92, 0.94, 0.98),
                   hills_phase=1.3, hills_colour=(0.05, 0.09, 0.12), stars=True)
    return sunset, night
