"""How this process's C allocator treats the frames' large buffers.

Every frame allocates and frees the same large buffers (a 1024 x 1024 frame's warped layers are 25 MB). By
default glibc hands blocks that large straight back to the kernel when freed and maps fresh ones for the next
frame, and the kernel zeroes each new page at its first touch: a page fault for every 4 KiB of every buffer
of every frame. Kept in the heap instead, they are reused by the next frame as they are. The peak memory is
the same (the largest frame sets it); the heap only does not give it back between frames. Figures are in
docs/benchmarks.md (``benchmarks/bench_morph.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from dataclasses import dataclass

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@dataclass(frozen=True)
class HeapParams:
    """What glibc keeps in the heap (its limits: ``man mallopt``)."""

    # Blocks up to this size come from the heap and go back to it: 32 MiB, the largest glibc takes on 64-bit
    # systems, holds every per-frame buffer of frames up to about 1400 x 1400.
    mmap_threshold: int = 32 * 2**20
    # Free memory at the heap's top is kept up to this much rather than returned after each frame.
    trim_threshold: int = 2**30
    # Heaps the threads share: with one, frames made on several threads reuse what the fit freed, and each other's
    # buffers; with a heap a thread, each kept its own and a 1024 morph's peak grew from about 680 to 820 MB.
    arenas: int = 1


def keep_freed_memory(params: HeapParams = HeapParams()) -> bool:
    """Have glibc's allocator keep freed large blocks for reuse, by every thread; True where it took the settings.

    Process-wide, so the commands call it (``diffmorph morph``, ``render``, ``ui``, each batch worker);
    a program using diffmorph as a library may call it too. Elsewhere than glibc (macOS, Windows, musl) it
    does nothing and returns False.
    """
    # Fixing the mmap threshold also stops glibc from moving it.
    return (_mallopt(_M_MMAP_THRESHOLD, params.mmap_threshold) & _mallopt(_M_TRIM_THRESHOLD, params.trim_threshold)
            & share_heaps(params.arenas))


def share_heaps(arenas: int = 2) -> bool:
    """Have the process's threads share at most ``arenas`` glibc heaps; True where glibc took the setting.

    glibc gives threads that allocate at once heaps of their own, up to eight per core, and each keeps the free
    memory of what ran on it. A server whose requests run on whichever of its threads is free (``diffmorph ui``:
    Gradio's pool) then holds, heap by heap, the free memory of every large job, and its resident memory climbed
    job after job while what it used stayed the same (docs/method.md, "The page as a service"). Call it before
    the threads start; heaps made before stay.
    """
    return _mallopt(_M_ARENA_MAX, arenas)


def _mallopt(parameter: int, value: int) -> bool:
    """glibc's ``mallopt(parameter, value)``; True where it took the setting, False where it did not or there is
    no glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols the process has loaded: the C library's among them
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(parameter, value) == 1  # 1: it took the setting


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel now (glibc only), e.g. once the frames are done: what the
    frames kept is then not carried into later work that allocates differently."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
