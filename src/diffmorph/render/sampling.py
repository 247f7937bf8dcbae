"""Where the sharp frames fetch the images' own pixels: bicubic sampling at a carried grid, the frame's costliest step.

On a GPU, torch's ``grid_sample`` does it. On a CPU, OpenCV's ``remap`` does the same sampling (Keys' cubic,
``a = -0.75``, as torch's; the border repeated) in one pass over the image and from its own layout, about twice
as fast as ``grid_sample`` there, and ``resize`` upsamples the carried grid (costs in docs/method.md).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch

from diffmorph.ops import resize, sampling_grid


class RemapSampler:
    """Samples two images, each at its own grid, with OpenCV on the CPU.

    Args:
        images: ``(2, 3, H, W)`` float32 on the CPU, any layout.
    """

    def __init__(self, images: torch.Tensor):
        if images.device.type != "cpu" or images.dtype != torch.float32:
            raise ValueError(f"RemapSampler samples float32 images on the CPU, got {images.dtype} on {images.device}")
        # Each image channels-last, (H, W, 3): OpenCV's layout.
        self.sources = [np.ascontiguousarray(image.permute(1, 2, 0).numpy()) for image in images]
        self._identities: dict[tuple[int, int], np.ndarray] = {}
        self._local = threading.local()  # each thread's buffers, per frame size: out, positions

    @property
    def size(self) -> tuple[int, int]:
        return self.sources[0].shape[:2]

    def __call__(self, grids: torch.Tensor, size: tuple[int, int], still: list[bool]) -> torch.Tensor:
        """Both images sampled at ``grids`` (``(2, h, w, 2)``, :func:`~diffmorph.ops.sampling_grid`'s terms), each
        upsampled to ``size``; an image whose ``still`` is True is fetched where no warp fetches (itself, at its own
        size).

        The grids are smooth fields, so what is upsampled is their departure from no warp (bilinearly, half-pixel
        centres), added to the exact pixel positions of ``size``: no warp fetches each pixel exactly.

        Returns:
            ``(2, 3, *size)`` float32, channels-last in memory: a view of a buffer that the next call of the same
            size overwrites (a frame's worth of memory, not one per frame).
        """
        height, width = size
        source_height, source_width = self.size
        buffers = self._local.__dict__.setdefault("buffers", {})
        if (height, width) not in buffers:
            buffers[height, width] = (np.empty((2, height, width, 3), dtype=np.float32),
                                      np.empty((height, width, 2), dtype=np.float32))
        out, positions = buffers[height, width]
        to_pixels = torch.tensor([(source_width - 1) / 2.0, (source_height - 1) / 2.0])
        if grids.shape[1:3] == (height, width):
            fetched = ((grids + 1.0) * to_pixels).numpy()  # (2, h, w, 2): x, y in the source's pixels
        else:  # the departure from no warp, in the source's pixels, upsampled below (resizing is linear)
            departure = ((grids - sampling_grid(torch.zeros(1, 2, *grids.shape[1:3]))) * to_pixels).numpy()
        for k in range(2):
            if still[k] and (height, width) == self.size:
                out[k] = self.sources[k]
                continue
            if still[k]:
                fetch = self._identity(height, width)
            elif grids.shape[1:3] == (height, width):
                fetch = fetched[k]
            else:
                cv2.resize(departure[k], (width, height), dst=positions, interpolation=cv2.INTER_LINEAR)
                fetch = cv2.add(positions, self._identity(height, width), dst=positions)
            cv2.remap(self.sources[k], fetch, None, cv2.INTER_CUBIC, dst=out[k], borderMode=cv2.BORDER_REPLICATE)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def _identity(self, height: int, width: int) -> np.ndarray:
        """``(height, width, 2)``: where no warp fetches each pixel of a frame of that size, in the source's
        pixels (x, y), corners on corners."""
        if (height, width) not in self._identities:
            source_height, source_width = self.size
            x = np.arange(width, dtype=np.float64) * ((source_width - 1) / max(1, width - 1))
            y = np.arange(height, dtype=np.float64) * ((source_height - 1) / max(1, height - 1))
            self._identities[height, width] = np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1
                                                       ).astype(np.float32)
        return self._identities[height, width]


def upsample(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(1, C, h, w)`` float32 on the CPU upsampled bilinearly to ``height`` x ``width`` with half-pixel centres, as
    :func:`~diffmorph.ops.resize` does, by OpenCV: ``(1, C, height, width)``, channels-last in memory."""
    planes = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy())  # (h, w, C)
    upsampled = cv2.resize(planes, (width, height), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(upsampled.reshape(height, width, -1)).permute(2, 0, 1)[None]


def shrink(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, C, H, W)`` made smaller, each small pixel the mean of the pixels it covers: by OpenCV's area
    averaging for float32 on a CPU, elsewhere by :func:`~diffmorph.ops.resize` with antialiasing."""
    if images.device.type != "cpu" or images.dtype != torch.float32:
        return resize(images, height, width, antialias=True)
    planes = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C), a view where the images are channels-last
    # OpenCV resizes up to 4 channels at once
    shrunk = [np.dstack([cv2.resize(np.ascontiguousarray(plane[..., first:first + 4]), (width, height),
                                    interpolation=cv2.INTER_AREA) for first in range(0, plane.shape[-1], 4)])
              for plane in planes]
    return torch.from_numpy(np.stack(shrunk)).permute(0, 3, 1, 2)
