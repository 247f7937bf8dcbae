"""Masks: regions a user marks, which the fit honours, from the API and the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import diffmorph
from diffmorph.errors import InputImageError
from diffmorph.io.flow import forward_flows
from synthetic import blobs

FAST = {"steps": 60, "size": 32, "refine": 20, "device": "cpu", "frames": 5}
LEFT = np.zeros((64, 64), np.uint8)
LEFT[:, :32] = 255  # the left half of the frame


@pytest.fixture(scope="module")
def moved():
    """A textured scene, and the same moved 10 px right and 5 px down: the fit's warp moves everything."""
    noisy = blobs(64, 64, seed=4) + np.random.default_rng(4).normal(0, 50, (64, 64, 1))
    scene = np.clip(noisy, 0, 255).astype(np.uint8)
    return scene, np.roll(scene, (5, 10), axis=(0, 1))


def flow_lengths(result) -> dict[str, np.ndarray]:
    flows = forward_flows(result.segments[0].maps, result.config.warp_scale, 64, 64)
    return {name: np.linalg.norm(flow, axis=-1) for name, flow in flows.items()}


def test_a_keep_mask_holds_its_region_still_and_crossfades_it(moved):
    free = flow_lengths(diffmorph.morph(list(moved), **FAST))
    assert min(lengths[:, :20].mean() for lengths in free.values()) > 5  # unguided, the left moves too
    result = diffmorph.morph(list(moved), masks=[LEFT, None], **FAST)  # B takes A's mask
    for lengths in flow_lengths(result).values():
        assert lengths[:, :20].max() < 1.0  # within a pixel of identity, away from the region's edge
        assert lengths[:, 44:].mean() > 5  # the rest still moves
    renderer = result.renderer(0, "cpu", frames=9)
    a, b = result.images
    for t in (0.25, 0.5, 0.75):
        off = (renderer.frame(t) - torch.lerp(a, b, renderer.paced(t))).abs()
        assert off[..., :20].mean() < 0.15 < off[..., 44:].mean()  # a crossfade in the region only
    assert "masked (A's 50% of the frame): kept still" in result.segments[0].describe_start()


def test_a_subject_mask_leaves_the_rest_unwarped(moved):
    right = 255 - LEFT
    result = diffmorph.morph(list(moved), masks=[right, right], mask_mode="subject", **FAST)
    for lengths in flow_lengths(result).values():
        assert lengths[:, :20].max() < 1.0 and lengths[:, 44:].mean() > 5
    renderer = result.renderer(0, "cpu", frames=9)
    a, b = result.images
    for t in (0.25, 0.5, 0.75):
        off = (renderer.frame(t) - torch.lerp(a, b, renderer.paced(t))).abs()
        assert off[..., :20].mean() < 0.15 < off[..., 44:].mean()  # outside the subject, a crossfade


def test_no_masks_change_nothing(moved):
    plain = diffmorph.morph(list(moved), **FAST)
    none = diffmorph.morph(list(moved), masks=[None, None], **FAST)
    assert torch.equal(plain.segments[0].maps, none.segments[0].maps)
    assert plain.segments[0].start == none.segments[0].start


@pytest.mark.parametrize(("masks", "mode", "message"), [
    ([np.zeros((64, 64), np.uint8), None], "keep", "marks nothing"),
    ([np.full((32, 64), 255, np.uint8), None], "keep", "mask of A is 64 x 32 pixels, its image 64 x 64"),
    ([LEFT], "keep", r"one mask \(or None\) per image"),
    ([LEFT, None], "inside", "unknown mask mode"),
])
def test_bad_masks_are_refused_in_one_line(moved, masks, mode, message):
    with pytest.raises(diffmorph.DiffmorphError, match=message):
        diffmorph.morph(list(moved), masks=masks, mask_mode=mode, **FAST)


def test_masks_from_the_command_line(moved, tmp_path):
    paths = []
    for name, array in (("a", moved[0]), ("b", moved[1]), ("mask", LEFT), ("empty", LEFT * 0)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(array).save(paths[-1])
    a, b, mask, empty = paths
    fast = ["--steps", "60", "--size", "32", "--refine", "20", "--frames", "5", "--format", "gif"]
    out = tmp_path / "out"

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "diffmorph", "morph", *map(str, flags), *fast],
                              capture_output=True, text=True, timeout=300)

    done = run(a, b, "-o", out, "--mask-a", mask)
    assert done.returncode == 0, done.stderr
    assert "masked (A's 50% of the frame): kept still, crossfading" in done.stderr
    (fit,) = json.loads((out / "config.json").read_text())["fit"]
    assert "kept still" in fit["start"]
    assert "kept still" in diffmorph.load_maps(out / "maps.safetensors").segments[0].describe_start()
    before = sorted(path.stat().st_mtime_ns for path in out.iterdir())
    for flags, message in (((a, b, "-o", out, "--mask-b", empty), "the mask of B marks nothing"),
                           ((a, b, a, "-o", out, "--mask-a", mask), "guide a pair"),
                           ((a, b, "-o", out, "--mask-mode", "subject"), "give --mask-a or --mask-b too")):
        failed = run(*flags)
        assert failed.returncode == 1 and message in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert sorted(path.stat().st_mtime_ns for path in out.iterdir()) == before  # nothing of it changed


def test_load_masks_fits_a_mask_to_the_frame_as_its_image():
    from diffmorph.start.masks import load_masks

    wide = np.zeros((32, 128), np.uint8)
    wide[:, 64:] = 255  # B's right half, B twice as wide as A's frame: cropped to its middle
    (mask_a, mask_b) = load_masks([None, wide], [(64, 64), (128, 32)], "crop", ["A", "B"])
    assert mask_a is None and mask_b.shape == (64, 64)
    assert mask_b[:, :30].max() < 0.01 and mask_b[:, 34:].min() > 0.99
    with pytest.raises(InputImageError, match="mask of B is 64 x 64 pixels, its image 128 x 32"):
        load_masks([None, np.zeros((64, 64), np.uint8)], [(64, 64), (128, 32)], "crop", ["A", "B"])
