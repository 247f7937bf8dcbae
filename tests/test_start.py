import numpy as np
import pytest
import torch

from diffmorph.config import MorphConfig
from diffmorph.demo import demo_pair
from diffmorph.ops import apply_maps, flow_from_warp_map, luma, psnr, resize, scales_of, warp
from diffmorph.start import Alignment, AutoParams, StartParams, SubjectMove, describe, starting_maps
from diffmorph.start.bend import BendParams, _area_change, _contrast, _curving, _local_agreement, local_warp
from diffmorph.start.move import MoveParams, find_alignment, phase_correlate, structure, warp_prior
from diffmorph.start.subject import SubjectParams, _subject_core, find_subject_move, subject_mask
from synthetic import MOSS, RED, SAND, YELLOW, ball, blobs

CONFIDENCE = MoveParams().confidence
LOCAL_SIZE = BendParams().size
SUBJECT_SIZE = SubjectParams().size

SIZE = 128


def texture(seed: int) -> torch.Tensor:
    """Blobs with fine noise on top, ``(1, 3, S, S)`` in [-1, 1]: structure at every scale, like a photo."""
    noisy = blobs(SIZE, SIZE, seed=seed) + np.random.default_rng(seed).normal(0, 40, (SIZE, SIZE, 1))
    image = torch.from_numpy(np.clip(noisy, 0, 255)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1
    return torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)


def mask_overlap(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x & y).sum() / (x | y).sum())


def curving(flows: torch.Tensor, points: int) -> float:
    """:func:`_curving` of ``flows`` sampled at ``points`` x ``points``."""
    return _curving(resize(flows, points, points, antialias=True)).item()


def moved(image: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """``image`` as B would show it under ``alignment``: carried by the prior's A->B warp."""
    prior = warp_prior(alignment, 1.0, SIZE, SIZE)
    return warp(image, flow_from_warp_map(prior[None, 6:8], 1.0))


def test_phase_correlation_finds_a_whole_pixel_shift_with_a_tall_peak():
    a = structure(texture(0))
    shift, confidence = phase_correlate(a, a.roll((-9, 14), (0, 1)))
    assert shift == (-9, 14) and confidence > 3 * CONFIDENCE


@pytest.mark.parametrize(("scale", "angle", "shift"), [
    (1.0, 0.0, (0.1, -0.15)), (1.1, 0.0, (-0.05, 0.08)), (0.9, 0.0, (0.0, 0.2)), (1.0, 10.0, (0.0, 0.0)),
    (1.1, -5.0, (0.06, 0.1)),
])
def test_finds_the_shift_turn_and_zoom_of_a_moved_scene(scale, angle, shift):
    a = texture(1)
    b = (moved(a, Alignment(scale, shift, 0.0, angle)) * 0.8 + 0.1).clamp(-1, 1)  # recoloured too
    found = find_alignment(a, b)
    assert found is not None and found.confidence >= CONFIDENCE
    assert (found.scale, found.angle) == (scale, angle)
    assert found.shift == pytest.approx(shift, abs=1.5 / SIZE)


@pytest.mark.parametrize("seeds", [(2, 3), (4, 5), (6, 7)])
def test_unrelated_images_and_a_still_pair_have_no_alignment(seeds):
    a, b = texture(seeds[0]), texture(seeds[1])
    assert find_alignment(a, b) is None
    assert find_alignment(a, a) is None  # the best move is none at all


def test_flat_images_have_no_alignment():
    flat = torch.zeros(1, 3, 40, 30)
    assert phase_correlate(structure(resize(flat, SIZE, SIZE)), structure(resize(flat, SIZE, SIZE)))[1] == 0.0
    assert find_alignment(flat, flat + 0.5) is None


def test_prior_maps_carry_a_onto_b_and_back():
    alignment = Alignment(1.1, (0.06, -0.1), 20.0, angle=7.0)
    a = texture(8)
    b = moved(a, alignment)
    config = MorphConfig()
    prior = resize(warp_prior(alignment, config.warp_scale, 84, 84).unsqueeze(0), SIZE, SIZE)  # as fits store them
    inner = (slice(None), slice(None), slice(24, 104), slice(24, 104))  # away from the repeated border
    assert psnr(apply_maps(a, prior[:, :8], scales_of(config))[inner], b[inner]) > 35 > psnr(a[inner], b[inner]) + 10
    # A->B then B->A returns every inner pixel where it started: the two warps are inverse.
    grid = torch.stack(torch.meshgrid(torch.arange(float(SIZE)), torch.arange(float(SIZE)), indexing="ij"))[None]
    round_trip = warp(warp(grid, flow_from_warp_map(prior[:, 6:8], config.warp_scale)),
                      flow_from_warp_map(prior[:, 14:16], config.warp_scale))
    assert (round_trip - grid)[inner].abs().max() < 0.05
    assert torch.count_nonzero(prior[:, 0:6]) == 0 and torch.count_nonzero(prior[:, 8:14]) == 0


def test_describe_says_where_b_went():
    assert Alignment(1.1, (0.08, 0.12), 20.0).describe() == "aligned: B is A moved 12 % right and 8 % down, 1.1x larger"
    assert Alignment(0.9, (-0.001, -0.05), 20.0).describe() == "aligned: B is A moved 5 % left, 0.9x smaller"
    assert Alignment(1.25, (0.0, 0.0), 20.0).describe() == "aligned: B is A 1.25x larger"
    assert (Alignment(1.0, (0.0, 0.0), 20.0, angle=-5.0).describe()
            == "aligned: B is A turned 5 degrees clockwise")


def test_positive_angles_turn_content_anticlockwise_on_screen():
    # A bright dot right of the centre; turned 90 degrees anticlockwise it shows above the centre (rows grow down).
    a = torch.full((1, 3, SIZE, SIZE), -1.0)
    a[..., 62:66, 94:98] = 1.0
    b = moved(a, Alignment(1.0, (0.0, 0.0), 0.0, angle=90.0))
    row, column = divmod(int(b[0, 0].argmax()), SIZE)
    assert abs(row - 32) <= 2 and abs(column - 64) <= 2


def bent(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` bent by a smooth field that no one move explains, recoloured; and that field (pixels)."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) / SIZE, torch.arange(SIZE) / SIZE, indexing="ij")
    field = torch.stack((4.0 * torch.sin(2 * torch.pi * xs), 4.0 * torch.cos(2 * torch.pi * ys)))[None]
    return (warp(image, field) * 0.8 + 0.1).clamp(-1, 1), field  # (1, 3, S, S), (1, 2, S, S)


def test_local_warp_follows_a_bend_both_ways():
    a = texture(8)
    b, field = bent(a)
    flows = local_warp(a, b, find_alignment(a, b))
    assert flows.shape == (2, 2, LOCAL_SIZE, LOCAL_SIZE)
    flows = resize(flows, SIZE, SIZE, antialias=True) * SIZE  # (2, 2, S, S) pixels
    inner = slice(SIZE // 8, 7 * SIZE // 8)
    error = (flows[0] - field[0])[:, inner, inner].norm(dim=0).mean()
    assert field[0].norm(dim=0).mean() > 3.5 and error < 1.0  # measured 0.3 px
    # B->A has no field written down; carrying B by it must give A back far better than not moving it.
    back, still = warp(b, flows[1:]), b
    gain = psnr(back[..., inner, inner], a[..., inner, inner]) - psnr(still[..., inner, inner], a[..., inner, inner])
    assert gain > 3.0
    assert _area_change(flows).min() > 0  # nowhere folded


@pytest.mark.parametrize("seed", [9, 12])
def test_local_warp_of_a_still_pair_stays_put(seed):
    a = texture(seed)
    flows = resize(local_warp(a, a, None), SIZE, SIZE, antialias=True) * SIZE
    # Points may drift where nothing tells them apart (flat patches; the frame's edges, where windows see the
    # repeated border): what counts is that carrying A by its flows leaves it as it was. Measured: 0.19-0.22 px
    # and 38.4-38.7 dB (the finest level, at twice these images' size, drifts most: without it 0.10-0.14 px,
    # 43 dB); a shift of half a pixel everywhere gives 33 dB here.
    assert flows.abs().mean() < 0.3
    inner = slice(16, SIZE - 16)
    carried = warp(a.expand(2, -1, -1, -1), flows)[..., inner, inner]
    assert psnr(carried, a[..., inner, inner].expand(2, -1, -1, -1)) > 36.0


@pytest.mark.parametrize("how", ["none", "global", "auto", "local"])
def test_starting_maps_only_warp(how):
    a = texture(10)
    b = moved(a, Alignment(1.0, (0.05, 0.1), 0.0))
    start = starting_maps(a, b, how, 0.05, 84)
    assert (start.move is None) == (how == "none") and (start.maps is None) == (how == "none")
    assert start.bent == (how == "local")  # auto: the move explains the pair, so it is not bent
    if start.maps is not None:
        assert start.maps.shape == (16, 84, 84) and not start.maps[[*range(6), *range(8, 14)]].any()
        dx = start.maps[7, 21:63, 21:63].mean() * 0.05  # A->B, fraction of the width
        assert dx == pytest.approx(0.1, abs=0.01)


def test_auto_bends_where_one_move_leaves_the_structure_apart():
    a = texture(8)
    b, _ = bent(a)
    auto, local, moved_only = (starting_maps(a, b, how, 0.05, 84) for how in ("auto", "local", "global"))
    assert auto.bent and torch.equal(auto.maps, local.maps)
    assert not moved_only.bent
    assert describe(auto.move, auto.bent).endswith("bent region by region")


def test_auto_does_not_bend_unrelated_pictures():
    # The demo pair (a sunset, a night with the hills shifted): "local" bends something into something,
    # but the two structures stay far apart, so "auto" does not bend: no move is found, and the pair's one
    # subject (the sun, then the moon) is carried from one place to the other.
    a, b = (torch.from_numpy(x).permute(2, 0, 1)[None].float() * 2 - 1 for x in demo_pair())
    auto, local = starting_maps(a, b, "auto", 0.05, 84), starting_maps(a, b, "local", 0.05, 84)
    assert not auto.bent and auto.move is None and auto.subject is not None
    assert torch.equal(auto.maps, starting_maps(a, b, "subject", 0.05, 84).maps)
    # The sun sits at 30 % of the width and half the height, the moon at 72 % and 24 %; the glows count too.
    assert auto.subject.centre_a == pytest.approx((0.5, 0.3), abs=0.05)
    assert auto.subject.centre_b == pytest.approx((0.24, 0.72), abs=0.03)
    assert describe(auto.move, auto.bent, auto.subject).startswith("aligned: the subject moves")
    assert local.bent and local.maps.abs().max() > 0
    unbent = starting_maps(texture(3), texture(4), "auto", 0.05, 84)  # two busy pictures: no subject either
    assert not unbent.bent and unbent.subject is None and unbent.maps is None


def test_auto_holds_the_ground_behind_a_subject_that_stays_in_place():
    # A subject in one place on two unrelated grounds: bending pairs the grounds' blotches piece by piece (the
    # old choice, kept where the share that must be surely matched is out of reach); the start is no warp.
    def ground(seed: int) -> torch.Tensor:
        noise = torch.rand(1, 3, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(seed))
        return torch.nn.functional.interpolate(noise, size=(SIZE, SIZE), mode="bicubic", align_corners=False) * 2 - 1

    subject = torch.from_numpy(blobs(SIZE, SIZE, seed=3)).permute(2, 0, 1)[None].float() / 127.5 - 1
    a, b = ground(4), ground(6)
    a[..., 40:88, 44:84] = b[..., 40:88, 44:84] = subject[..., 40:88, 44:84]
    auto = starting_maps(a, b, "auto", 0.05, 84)
    assert not auto.bent and auto.maps is None and auto.subject is None
    assert auto.free[:, :15].mean() < 0.75 and auto.free[:, 36:48, 38:50].mean() > 0.9  # the ground is held
    unreachable = StartParams(auto=AutoParams(in_place=1.01))
    assert starting_maps(a, b, "auto", 0.05, 84, unreachable).bent


def test_subject_mask_finds_one_compact_subject_that_stands_out_of_its_ground():
    size = SUBJECT_SIZE
    image = ball((0.4, 0.35), 0.15, RED, SAND, seed=1, height=size, width=size)
    mask = subject_mask(image)
    ys, xs = torch.meshgrid((torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij")
    truth = torch.hypot(ys - 0.4, xs - 0.35) < 0.15
    assert mask is not None and mask_overlap(mask, truth) > 0.8  # the blur adds a ring of about a pixel
    assert subject_mask(ball((0.4, 0.35), 0.0, RED, SAND, seed=1, height=size, width=size)) is None  # ground only
    assert subject_mask(ball((0.1, 0.35), 0.15, RED, SAND, seed=1, height=size, width=size)) is None  # cut off
    two = torch.maximum(image, ball((0.7, 0.7), 0.15, RED, SAND, seed=1, height=size, width=size))
    assert subject_mask(two) is None  # two subjects alike: neither is the one
    assert subject_mask(resize(texture(3), size, size, antialias=True)) is None  # a busy picture


def test_finds_how_a_subject_moved_and_grew_over_changed_ground():
    a = ball((0.3, 0.3), 0.12, RED, SAND, seed=1)
    b = ball((0.65, 0.7), 0.15, YELLOW, MOSS, seed=2)
    found = find_subject_move(a, b)
    assert found is not None
    move, mask_a, mask_b = found
    assert move.scale == pytest.approx(1.25, rel=0.1) and move.overlap > 0.85
    assert move.centre_a == pytest.approx((0.3, 0.3), abs=1.5 / SUBJECT_SIZE)
    assert move.centre_b == pytest.approx((0.65, 0.7), abs=1.5 / SUBJECT_SIZE)
    assert mask_a.shape == mask_b.shape == (SUBJECT_SIZE, SUBJECT_SIZE)
    # Subjects of other shapes are not the same subject: a ball and a long bar of about its area.
    bar = ball((0.65, 0.7), 0.0, YELLOW, MOSS, seed=2)
    bar[..., 70:85, 30:120] = torch.tensor(YELLOW).view(1, 3, 1, 1)
    assert find_subject_move(a, bar) is None
    assert find_subject_move(a, ball((0.5, 0.5), 0.27, YELLOW, MOSS, seed=2)) is None  # grown more than 2x


def test_subject_start_carries_the_subject_alone_and_holds_the_warp():
    a = ball((0.3, 0.3), 0.12, RED, SAND, seed=1)
    b = ball((0.65, 0.7), 0.15, YELLOW, MOSS, seed=2)
    start = starting_maps(a, b, "subject", 0.05, 84)
    assert start.subject is not None and not start.bent and start.move is None
    # The fit holds the warp on each ball and may change it elsewhere; A's ground that B's ball covers is left
    # out of its round trip (that ground has nowhere to go and back).
    ys, xs = torch.meshgrid((torch.arange(84) + 0.5) / 84, (torch.arange(84) + 0.5) / 84, indexing="ij")
    on_a, on_b = torch.hypot(ys - 0.3, xs - 0.3) < 0.1, torch.hypot(ys - 0.65, xs - 0.7) < 0.13
    assert start.free.shape == (2, 84, 84) and start.round_trip.shape == (84, 84)
    assert start.free[0][on_b].max() < 0.05 and start.free[1][on_a].max() < 0.05
    assert start.free[:, :15, 60:].min() == 1.0  # the top right, far from both balls
    assert start.round_trip[on_b].max() < 0.05 and start.round_trip[on_a].min() == 1.0
    assert not start.maps[[*range(6), *range(8, 14)]].any()
    flows = flow_from_warp_map(resize(start.maps.view(2, 8, 84, 84)[:, 6:8], SIZE, SIZE), 0.05)  # (2, 2, S, S)
    masks = [(image - ground).norm(dim=1, keepdim=True) > 0.3 for image, ground in
             ((a, ball((0.3, 0.3), 0.0, RED, SAND, seed=1)), (b, ball((0.65, 0.7), 0.0, YELLOW, MOSS, seed=2)))]
    # Every pixel of each ball fetches the other ball (elsewhere the ground stays, so A's ball is fetched in
    # its own place too: the frames do not show what the other direction's warp moves away).
    carried = [warp(masks[0].float(), flows[0:1]) > 0.5, warp(masks[1].float(), flows[1:2]) > 0.5]
    for fetched, target in ((carried[0], masks[1]), (carried[1], masks[0])):
        assert float((fetched & target).sum() / target.sum()) > 0.9  # measured 0.94 and 1.00: the edges
    assert flows[:, :, 100:, :20].abs().max() < 0.5  # the ground far from both balls stays where it is
    auto = starting_maps(a, b, "auto", 0.05, 84)  # no move, bending does not make the grounds agree
    assert torch.equal(auto.maps, start.maps) and auto.subject == start.subject
    # The thresholds are parameters: asking for a closer match of the two shapes than any finds none.
    strict = StartParams(subject=SubjectParams(overlap=1.01))
    assert starting_maps(a, b, "subject", 0.05, 84, strict).subject is None
    # A ball that moved with its scene is carried by the move of the whole picture, turn and all, not alone.
    scene = ball((0.4, 0.4), 0.12, RED, SAND, seed=1)
    along = starting_maps(scene, scene.roll((10, 16), (2, 3)), "subject", 0.05, 84)
    assert along.subject is None and along.move is not None
    assert along.move.shift == pytest.approx((10 / SIZE, 16 / SIZE), abs=1 / SIZE)
    plain = starting_maps(texture(3), texture(4), "subject", 0.05, 84)  # no subject: as "global" (none here)
    assert plain.maps is None and plain.subject is None
    assert describe(None, False, None, "subject") == "aligned: no one subject stands out of both images alike"


def test_a_subject_that_fades_into_its_ground_is_carried_wholly_only_at_its_core():
    # The demo's sun and moon fade into the sky through their glows: the fit holds the warp on each disc, and
    # towards the glow's edge the share of the subject's move falls off, so the glow is not cut there.
    a, b = (torch.from_numpy(x).permute(2, 0, 1)[None].float() * 2 - 1 for x in demo_pair(240, 180))
    start = starting_maps(a, b, "subject", 0.05, 84)
    assert start.subject is not None
    small = [resize(image, SUBJECT_SIZE, SUBJECT_SIZE, antialias=True) for image in (a, b)]
    masks = [subject_mask(image) for image in small]
    cores = [_subject_core(image, mask, SubjectParams()) for image, mask in zip(small, masks, strict=True)]
    for mask, core in zip(masks, cores, strict=True):
        assert core is not None and bool((core <= mask).all()) and 0.1 < core.sum() / mask.sum() < 0.7
    moon, glow = (resize(mask.float()[None, None], 84, 84)[0, 0] for mask in (cores[1], masks[1]))
    held = -torch.nn.functional.max_pool2d(-moon[None, None], 3, 1, 1)[0, 0] > 0.99  # the disc, less its edge
    rim = (glow > 0.5) & (torch.nn.functional.max_pool2d(-glow[None, None], 3, 1, 1)[0, 0] > -0.5)
    assert start.free[0][held].max() < 0.05  # A->B on B's grid: B's moon fetches A's sun
    assert 0.3 < float(start.free[0][rim].median()) < 0.8  # measured 0.59; held wholly up to the edge: 0
    # A ball has an edge: its distance from the ground has fallen to the ground's two pixels outside it.
    image = resize(ball((0.3, 0.3), 0.12, RED, SAND, seed=1), SUBJECT_SIZE, SUBJECT_SIZE, antialias=True)
    assert _subject_core(image, subject_mask(image), SubjectParams()) is None


def test_describes_a_subjects_move():
    move = SubjectMove(scale=1.25, centre_a=(0.3, 0.3), centre_b=(0.65, 0.7), overlap=0.9)
    assert move.describe() == "aligned: the subject moves 40 % right and 35 % down, 1.2x larger"
    still = SubjectMove(scale=0.99, centre_a=(0.3, 0.3), centre_b=(0.3, 0.3), overlap=0.9)
    assert still.describe() == "aligned: the subject stays"


def test_local_agreement_counts_windows_by_contrast():
    # Twice the contrast on the left of the fixed image than on the right; the moving image matches it on
    # the left only. Counted by contrast, the matching half weighs twice as much as the other.
    fixed = luma(texture(3))
    fixed[..., :SIZE // 2] *= 2.0
    moving = fixed.clone()
    moving[..., SIZE // 2:] = luma(texture(4))[..., SIZE // 2:]
    assert _local_agreement(fixed, fixed, _contrast(fixed)).item() > 0.85  # measured 0.89 (faint windows lose some)
    weighted = _local_agreement(moving, fixed, _contrast(fixed)).item()
    plain = _local_agreement(moving, fixed, torch.ones_like(fixed)).item()
    assert weighted > plain + 0.1  # measured 0.67 against 0.51


def test_coarse_levels_bend_only_where_a_zoom_or_move_does_not_do():
    # Between two unrelated textures anything the coarse levels match is chance; without the curving penalty
    # they bent the field to match blobs (as between two different faces, into a caricature of one another).
    a, b = texture(3), texture(4)
    penalised = curving(local_warp(a, b, None, levels=3), 16)
    free = curving(local_warp(a, b, None, levels=3, params=BendParams(curve=0.0)), 16)
    assert penalised < 0.25 * free  # measured 8.0 against 105


def test_fine_levels_bend_sharply_at_a_depth_edge_but_do_not_crumple():
    # B: A's left half moved 8 px right (near), its right half where it was (far). The robust penalty lets
    # the field step there; the squared one, at the same weight, smooths the step over its neighbours.
    a = texture(5)
    truth = torch.zeros(1, 2, SIZE, SIZE)
    truth[:, 1, :, : SIZE // 2] = 8.0
    b = warp(a, truth)

    def error(flows):
        flow = resize(flows[0:1], SIZE, SIZE, antialias=True) * SIZE
        return (flow - truth).norm(dim=1)[0, 8:-8, 8:-8].mean().item()

    robust = error(local_warp(a, b, None))
    squared = error(local_warp(a, b, None, params=BendParams(fine_curving="squared")))
    assert robust < 0.8 * squared  # measured 0.18 against 0.29 px

    # Between two unrelated textures, the penalty keeps the finished field from curving as much as it would.
    penalised = curving(local_warp(texture(3), texture(4), None), 48)
    unpenalised = local_warp(texture(3), texture(4), None, params=BendParams(kink=0.0))
    assert penalised < 0.8 * curving(unpenalised, 48)  # measured 849 against 1363
