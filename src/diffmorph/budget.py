"""What a request may ask of the machine, checked before any decoding, fitting or rendering starts.

Every numeric option has its range in :class:`~diffmorph.config.MorphConfig`; this adds the limits that depend
on several of them together: the frames of the whole animation, the output's sides, and the peak memory of the
fit and the render against the memory this machine has free.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffmorph.config import MorphConfig
from diffmorph.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """The limits, and the memory model of a morph (fitted to the peaks of benchmarks/bench_morph.py)."""

    max_frames: int = 100_000  # frames of one animation: about 40 minutes at 45 fps
    max_side: int = 16_384  # pixels on either side of the output: H.264's and most players' limit
    baseline_mb: float = 400.0  # the process with torch loaded, before any image
    render_bytes_per_pixel: float = 450.0  # per output pixel: both images, their 2x upsamplings, the grids
    fit_bytes_per_pixel: float = 2048.0  # per pixel of the refinement's working size (FitParams.refine_side)
    # Frames made at once on a CPU (one per thread): each takes about this much per output pixel while it is made
    # (its layers, grids and bands), and together they take at most frame_share of the memory free before them.
    frame_bytes_per_pixel: float = 64.0
    frame_share: float = 0.5


def check_frames(frames: int, budget: Budget = Budget(), lower: str = "lower --frames") -> None:
    """Refuse an animation of more than ``budget.max_frames`` frames, saying what to ``lower``."""
    if frames > budget.max_frames:
        raise ConfigError(f"the animation would have {frames:,} frames, over the limit of {budget.max_frames:,}; "
                          f"{lower}")


def check_size(config: MorphConfig, width: int, height: int, fit_side: int, budget: Budget = Budget(),
               available: int | None = None) -> None:
    """Refuse, in one line naming the option to lower, an output this machine cannot hold.

    Args:
        config: validated settings, the render settings included.
        width, height: the first image's own size.
        fit_side: side of the fit's largest working size (the refinement's).
        available: free memory in bytes (by default what the operating system reports; None where unknown).

    Raises:
        ConfigError: too large an output, or more memory than is free.
    """
    out_width, out_height = config.output_size(width, height)
    if max(out_width, out_height) > budget.max_side:
        raise ConfigError(f"the output would be {out_width} x {out_height} pixels, over {budget.max_side} on a side; "
                          f"give a smaller --width")
    free = free_memory() if available is None else available
    if free is None:
        return
    render = budget.render_bytes_per_pixel * out_width * out_height
    fit = budget.fit_bytes_per_pixel * fit_side**2
    need = budget.baseline_mb * 2**20 + max(render, fit)
    if need > free:
        lower = "--width (or use smaller images)" if render >= fit else "--size"
        raise ConfigError(f"this morph needs about {need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is "
                          f"free; lower {lower}")


def frames_at_once(width: int, height: int, budget: Budget = Budget(), available: int | None = None) -> int | None:
    """How many frames of ``width`` x ``height`` may be made at once in the memory free now (at least 1), or None
    where it is unknown."""
    free = free_memory() if available is None else available
    if free is None:
        return None
    return max(1, int(budget.frame_share * free // (budget.frame_bytes_per_pixel * width * height)))


def free_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
