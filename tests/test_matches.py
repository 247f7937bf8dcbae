"""Where a start finds a match, and what the fit may change where it finds none (diffmorph.start.matches)."""

import pytest
import torch

from diffmorph.ops import warp
from diffmorph.start import MatchParams, StartParams, starting_maps
from diffmorph.start.flows import in_pixels
from diffmorph.start.matches import gated, holding, round_trip_gap, unmatched
from diffmorph.start.move import move_flows
from synthetic import blobs


def texture(seed: int, size: int = 128) -> torch.Tensor:
    """Busy, fine texture in [-1, 1]: (1, 3, S, S), its grain 2 pixels (coarser grains agree by chance within
    MatchParams.reach more often)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, size // 2, size // 2, generator=g)
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False) * 2 - 1


def test_a_scene_and_its_shifted_copy_match_unrelated_textures_do_not():
    a = texture(1)
    flows = torch.zeros(2, 2, 128, 128)
    flows[0, 1], flows[1, 1] = 6 / 128, -6 / 128  # A's content 6 px to the right in B, and back
    b = warp(a, in_pixels(flows[0:1]))
    assert round_trip_gap(flows)[:, :, :, 8:-8].max() < 1e-6
    missing = unmatched(a, b, flows)
    assert missing.shape == (2, 128, 128)
    assert missing[:, 16:-16, 16:-16].max() < 0.1
    assert unmatched(a, b, torch.zeros_like(flows))[:, 16:-16, 16:-16].mean() > 0.6  # not without the move
    assert unmatched(a, texture(2), torch.zeros_like(flows)).mean() > 0.7
    # Flows that do not undo each other do not make a match, however well the first one matches.
    assert unmatched(a, b, torch.stack((flows[0], flows[0])))[1, 16:-16, 16:-16].mean() > 0.6


def test_no_structure_is_no_evidence_of_a_mismatch():
    flat = torch.zeros(1, 3, 128, 128)
    assert unmatched(flat, texture(2), torch.zeros(2, 2, 128, 128)).max() < 1e-6


def test_holding_spans_the_hold_to_full_freedom():
    params = MatchParams(hold=0.2)
    missing = torch.zeros(2, 128, 128)
    missing[:, :, :64] = 1.0
    free = holding(missing, 84, params)
    assert free.shape == (2, 84, 84)
    assert free[:, :, :30].max() == pytest.approx(0.2) and free[:, :, 54:].min() == pytest.approx(1.0)


def test_a_bend_is_kept_only_where_it_matched():
    bent = torch.full((2, 2, 32, 32), 0.1)
    moved = torch.zeros(2, 2, 32, 32)
    missing = torch.zeros(2, 32, 32)
    missing[:, :16] = 1.0
    kept = gated(bent, moved, missing)
    assert kept[:, :, :12].abs().max() < 1e-6 and torch.allclose(kept[:, :, 20:], bent[:, :, 20:])


def test_the_fit_is_held_where_nothing_corresponds_and_left_alone_where_the_move_explains():
    a = torch.from_numpy(blobs(128, 128, seed=3)).permute(2, 0, 1)[None].float() / 127.5 - 1
    a = a + 0.5 * texture(4)  # structure for the move's search to find
    unrelated = starting_maps(a, texture(5), "global", 0.05, 84)
    assert unrelated.free.mean() < 0.3
    flows = move_flows(None, 128)
    flows[0, 1], flows[1, 1] = 8 / 128, -8 / 128
    moved = starting_maps(a, warp(a, in_pixels(flows[0:1])), "global", 0.05, 84)
    assert moved.move is not None and moved.free is None  # it matches nearly all the frame: left whole
    # Where a start must match more than any can to be left whole, the moved pair is free where its move matches.
    strict = StartParams(match=MatchParams(settled=1.01))
    held = starting_maps(a, warp(a, in_pixels(flows[0:1])), "global", 0.05, 84, strict)
    assert held.free[:, 15:-15, 15:-15].min() > 0.9
    # The original method's start holds nothing.
    assert starting_maps(a, texture(5), "none", 0.05, 84).free is None
    # And the hold is a parameter.
    loose = starting_maps(a, texture(5), "global", 0.05, 84, StartParams(match=MatchParams(hold=1.0)))
    assert loose.free.min() == pytest.approx(1.0)
