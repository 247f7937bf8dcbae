import math

import pytest
import torch

from diffmorph.loss import morph_loss
from diffmorph.ops import (
    MapScales,
    apply_maps,
    blend_frame,
    coordinate_grid,
    fill_holes,
    flow_from_warp_map,
    gaussian_blur,
    psnr,
    resize,
    splat,
    warp,
)

# A 3 x 4 image whose value at (y, x) is 10 y + x, so every sample tells where it came from.
IMAGE = torch.tensor([[0.0, 1.0, 2.0, 3.0],
                      [10.0, 11.0, 12.0, 13.0],
                      [20.0, 21.0, 22.0, 23.0]]).view(1, 1, 3, 4)


def constant_flow(dy: float, dx: float, height: int = 3, width: int = 4) -> torch.Tensor:
    return torch.tensor([dy, dx]).view(1, 2, 1, 1).expand(1, 2, height, width).contiguous()


class TestWarpGolden:
    def test_plus_one_pixel_in_x_moves_content_right_with_border_clamp(self):
        out = warp(IMAGE, constant_flow(0.0, 1.0))
        expected = torch.tensor([[0.0, 0.0, 1.0, 2.0], [10.0, 10.0, 11.0, 12.0], [20.0, 20.0, 21.0, 22.0]])
        torch.testing.assert_close(out[0, 0], expected)

    def test_channel_zero_is_y(self):
        out = warp(IMAGE, constant_flow(1.0, 0.0))
        expected = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]])
        torch.testing.assert_close(out[0, 0], expected)

    def test_half_pixel_is_bilinear(self):
        out = warp(IMAGE, constant_flow(-0.5, -0.5))  # samples at (y + 0.5, x + 0.5)
        expected = torch.tensor([[5.5, 6.5, 7.5, 8.0], [15.5, 16.5, 17.5, 18.0], [20.5, 21.5, 22.5, 23.0]])
        torch.testing.assert_close(out[0, 0], expected)

    def test_far_outside_takes_the_border(self):
        out = warp(IMAGE, constant_flow(100.0, -100.0))  # samples at (y - 100, x + 100): top-right corner
        torch.testing.assert_close(out, torch.full_like(IMAGE, 3.0))

    def test_per_pixel_flow(self):
        flow = torch.zeros(1, 2, 3, 4)
        flow[0, 1, 1, 2] = 2.0  # only pixel (1, 2) samples from (1, 0)
        out = warp(IMAGE, flow)
        expected = IMAGE.clone()
        expected[0, 0, 1, 2] = 10.0
        torch.testing.assert_close(out, expected)


class TestWarpInvariants:
    @pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 5, 7), (1, 8, 16, 9)])
    def test_zero_flow_is_identity(self, shape):
        image = torch.randn(shape)
        out = warp(image, torch.zeros(shape[0], 2, *shape[2:]))
        assert out.shape == image.shape
        torch.testing.assert_close(out, image, atol=1e-5, rtol=0)

    def test_one_flow_broadcasts_over_the_batch(self):
        image = torch.randn(3, 2, 6, 5)
        flow = torch.randn(1, 2, 6, 5)
        torch.testing.assert_close(warp(image, flow), warp(image, flow.expand(3, -1, -1, -1)))

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="flow must be"):
            warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
        with pytest.raises(ValueError, match="flow must be"):
            warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 5))
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            warp(torch.zeros(3, 4, 4), torch.zeros(2, 4, 4))
        with pytest.raises(ValueError, match="at least 2 x 2"):
            warp(torch.zeros(1, 3, 1, 4), torch.zeros(1, 2, 1, 4))

    def test_gradcheck_float64(self):
        torch.manual_seed(0)
        image = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        # Fractional flows keep every sample away from the kinks of bilinear interpolation and the border.
        flow = (torch.rand(1, 2, 3, 4, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
        flow.data[:, :, :, 0] *= -1  # some samples move left, some right
        assert torch.autograd.gradcheck(warp, (image, flow), eps=1e-6, atol=1e-5)


class TestApplyMaps:
    @pytest.mark.parametrize("add_first", [False, True])
    def test_neutral_maps_change_nothing(self, add_first):
        image = torch.rand(2, 3, 8, 6) * 2 - 1
        out = apply_maps(image, torch.zeros(2, 8, 8, 6), MapScales(add_first=add_first))
        torch.testing.assert_close(out, image, atol=1e-5, rtol=0)

    def test_formula_by_hand(self):
        image = torch.full((1, 3, 4, 4), 0.5)
        maps = torch.zeros(1, 8, 4, 4)
        maps[:, 0:3] = 1.0  # factor 1 + 1 * 0.4 = 1.4
        maps[:, 3:6] = 0.25  # offset 0.25 * 2 * 0.4 = 0.2
        scales = MapScales()
        torch.testing.assert_close(apply_maps(image, maps, scales), torch.full_like(image, 0.5 * 1.4 + 0.2))
        first = MapScales(add_first=True)
        torch.testing.assert_close(apply_maps(image, maps, first), torch.full_like(image, (0.5 + 0.2) * 1.4))

    def test_mult_floor_is_a_tenth(self):
        image = torch.full((1, 3, 4, 4), 0.5)
        maps = torch.zeros(1, 8, 4, 4)
        maps[:, 0:3] = -100.0
        torch.testing.assert_close(apply_maps(image, maps, MapScales()), torch.full_like(image, 0.05))

    def test_warp_map_scales_with_image_size(self):
        warp_map = torch.ones(1, 2, 20, 40)
        flow = flow_from_warp_map(warp_map, 0.05)
        assert flow[0, 0, 0, 0].item() == pytest.approx(1.0)  # 20 px * 0.05
        assert flow[0, 1, 0, 0].item() == pytest.approx(2.0)  # 40 px * 0.05

    def test_bad_maps_shape_raises(self):
        with pytest.raises(ValueError, match="maps must be"):
            apply_maps(torch.zeros(1, 3, 4, 4), torch.zeros(1, 6, 4, 4), MapScales())

    def test_gradcheck_float64(self):
        torch.manual_seed(1)
        image = (torch.rand(1, 3, 3, 4, dtype=torch.float64) * 2 - 1).requires_grad_()
        maps = (torch.rand(1, 8, 3, 4, dtype=torch.float64) * 0.4 - 0.2)
        maps[:, 6:8] = torch.rand(1, 2, 3, 4, dtype=torch.float64) * 1.0 + 0.6  # flows of 0.1-0.4 px
        maps.requires_grad_()
        assert torch.autograd.gradcheck(lambda i, m: apply_maps(i, m, MapScales()), (image, maps),
                                        eps=1e-6, atol=1e-5)


class TestLossAndFrames:
    def test_loss_is_zero_for_identical_images_and_neutral_maps(self):
        a = torch.rand(1, 3, 16, 16) * 2 - 1
        net_input = torch.cat((coordinate_grid(16, 16), a * 0.1, a * 0.1), dim=1)
        loss = morph_loss(net_input, a, a, torch.zeros(1, 16, 16, 16), MapScales())
        assert loss.item() == pytest.approx(0.0, abs=1e-10)

    def test_loss_weights_by_hand(self):
        a, b = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
        net_input = torch.cat((coordinate_grid(8, 8), a, b), dim=1)
        loss = morph_loss(net_input, a, b, torch.zeros(1, 16, 8, 8), MapScales())
        assert loss.item() == pytest.approx(0.3 * 0.25 + 0.3 * 0.25)

    def test_colour_weight_penalises_only_the_colour_maps(self):
        a, b = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)
        net_input = torch.cat((coordinate_grid(8, 8).expand(2, -1, -1, -1), a, b), dim=1)
        maps = torch.zeros(2, 16, 8, 8)
        maps[0, 0:6] = 0.5  # pair 0: half of the 12 colour channels at 0.5, a mean square of 0.125
        maps[1, 6:8] = 1.0  # pair 1: a warp only, which the penalty must ignore
        plain = morph_loss(net_input, a, b, maps, MapScales())
        held = morph_loss(net_input, a, b, maps, MapScales(), colour_weight=2.0)
        assert held[0].item() == pytest.approx(plain[0].item() + 2.0 * 0.125)
        assert held[1].item() == pytest.approx(plain[1].item())

    def test_each_pair_of_a_batch_is_measured_with_its_own_maps_of_each_direction(self):
        generator = torch.Generator().manual_seed(4)
        a, b = (torch.rand(3, 3, 12, 12, generator=generator) * 2 - 1 for _ in range(2))
        net_input = torch.cat((coordinate_grid(12, 12).expand(3, -1, -1, -1), a * 0.1, b * 0.1), dim=1)
        maps = (torch.rand(3, 16, 12, 12, generator=generator) - 0.5).requires_grad_()
        batch = morph_loss(net_input, a, b, maps, MapScales())
        batch.sum().backward()
        for k in range(3):
            alone = maps[k:k + 1].detach().clone().requires_grad_()
            loss = morph_loss(net_input[k:k + 1], a[k:k + 1], b[k:k + 1], alone, MapScales())
            loss.backward()
            assert batch[k].item() == pytest.approx(loss.item(), rel=1e-6)
            torch.testing.assert_close(maps.grad[k:k + 1], alone.grad, rtol=1e-5, atol=1e-7)

    def test_gaussian_blur_keeps_constants_and_mass(self):
        flat = torch.full((1, 3, 12, 10), 0.3)
        assert torch.allclose(gaussian_blur(flat, 4.0), flat)
        spike = torch.zeros(1, 1, 21, 21)
        spike[0, 0, 10, 10] = 1.0
        blurred = gaussian_blur(spike, 2.0)
        assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert blurred[0, 0, 10, 10].item() == pytest.approx(1 / (2 * math.pi * 4), rel=0.02)  # the Gaussian's peak
        assert gaussian_blur(spike, 0.2) is spike

    def test_gaussian_blur_blurs_each_plane_of_a_batch_alone(self):
        images = torch.rand(3, 2, 17, 23, generator=torch.Generator().manual_seed(0))
        images[1, 0, 8, 11] = 50.0  # a spike in one plane must not leak into another
        together = gaussian_blur(images, 1.5)
        alone = torch.cat([gaussian_blur(images[k:k + 1, c:c + 1], 1.5) for k in range(3) for c in range(2)])
        torch.testing.assert_close(together, alone.view(3, 2, 17, 23), rtol=0, atol=1e-5)  # up to rounding
        assert together[1, 0].amax() > 1.0 and together[[0, 2]].amax() < 1.0 and together[1, 1].amax() < 1.0

    def test_endpoints_are_the_inputs(self):
        a, b = torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 8, 8) * 2 - 1
        maps_ab, maps_ba = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
        torch.testing.assert_close(blend_frame(a, b, maps_ab, maps_ba, 0.0, MapScales()), a, atol=1e-5, rtol=0)
        torch.testing.assert_close(blend_frame(a, b, maps_ab, maps_ba, 1.0, MapScales()), b, atol=1e-5, rtol=0)

    def test_frames_stay_in_range(self):
        a, b = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
        maps = torch.randn(1, 8, 8, 8) * 5
        frame = blend_frame(a, b, maps, maps, 0.5, MapScales())
        assert frame.min() >= -1 and frame.max() <= 1


def test_coordinate_grid_corners():
    grid = coordinate_grid(3, 5)
    assert grid.shape == (1, 2, 3, 5)
    assert grid[0, 0, 0, 0] == -1 and grid[0, 0, -1, 0] == 1  # y down the rows
    assert grid[0, 1, 0, 0] == -1 and grid[0, 1, 0, -1] == 1  # x along the columns


def test_resize_half_pixel_centres_match_tensorflow():
    # tf.image.resize([[0, 1]], [1, 4], "bilinear") gives [0, 0.25, 0.75, 1].
    out = resize(torch.tensor([[[[0.0, 1.0]]]]), 1, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_psnr():
    assert psnr(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)) == float("inf")
    assert psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)) == pytest.approx(0.0)


def test_nan_flow_gives_nan_output_and_a_finite_backward():
    image = torch.rand(1, 3, 4, 4, requires_grad=True)
    flow = torch.zeros(1, 2, 4, 4)
    flow[0, :, 1, 2] = float("nan")
    flow.requires_grad_()
    out = warp(image, flow)
    assert torch.isnan(out[0, :, 1, 2]).all()
    assert torch.isfinite(out[0, :, 0, 0]).all()
    out.nansum().backward()  # used to crash the process inside grid_sample's backward
    assert torch.isfinite(image.grad).all()


class TestSplat:
    def test_pixels_that_keep_their_places_keep_their_values_and_cover_once(self):
        values = torch.randn(2, 3, 3, 4)
        mean, coverage = splat(values, torch.zeros(2, 2, 3, 4), torch.zeros(2, 1, 3, 4))
        assert mean.shape == (2, 3, 3, 4) and coverage.shape == (2, 1, 3, 4)
        assert torch.allclose(mean, values) and torch.equal(coverage, torch.ones_like(coverage))

    def test_a_shift_lands_on_the_shifted_pixels_and_uncovers_the_edge_it_leaves(self):
        mean, coverage = splat(IMAGE, constant_flow(1.0, 2.0), torch.zeros(1, 1, 3, 4))
        # Every pixel moves 1 down and 2 right: row 0 and columns 0-1 receive nothing.
        assert torch.equal(coverage[0, 0], torch.tensor([[0.0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]))
        assert torch.equal(mean[0, 0, 1:, 2:], IMAGE[0, 0, :2, :2])
        assert torch.equal(mean[0, 0, 0], torch.zeros(4))

    def test_a_fraction_of_a_pixel_is_shared_bilinearly(self):
        values = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
        mean, coverage = splat(values, constant_flow(0.0, 0.25, 1, 4), torch.zeros(1, 1, 1, 4))
        assert torch.allclose(coverage[0, 0, 0], torch.tensor([0.75, 1.0, 1.0, 1.0]))
        # Pixel 1 gets 0.25 of pixel 0 and 0.75 of itself.
        assert torch.allclose(mean[0, 0, 0], torch.tensor([1.0, 1.75, 2.75, 3.75]))

    def test_the_more_important_pixel_covers_where_two_meet(self):
        values = torch.tensor([[[[5.0, 0.0, 1.0]]]])
        displacement = torch.zeros(1, 2, 1, 3)
        displacement[0, 1, 0, 0] = 2.0  # pixel 0 lands on pixel 2
        for weight, expected in ((30.0, 5.0), (-30.0, 1.0)):
            importance = torch.zeros(1, 1, 1, 3)
            importance[0, 0, 0, 0] = weight
            mean, _ = splat(values, displacement, importance)
            assert float(mean[0, 0, 0, 2]) == pytest.approx(expected, abs=1e-5)

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="displacement must be"):
            splat(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2))
        with pytest.raises(ValueError, match="values must be"):
            splat(torch.zeros(1, 1, 2, 3), torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))
        with pytest.raises(ValueError, match="importance must be"):
            splat(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 3))


class TestFillHoles:
    def test_known_pixels_stay_and_holes_take_their_surroundings(self):
        image = torch.arange(48.0).view(1, 3, 4, 4)
        known = torch.ones(1, 1, 4, 4, dtype=torch.bool)
        assert torch.equal(fill_holes(image, known), image)
        known[0, 0, 1:3, 1:3] = False
        filled = fill_holes(image, known)
        assert torch.equal(filled[known.expand_as(image)], image[known.expand_as(image)])
        for channel in range(3):  # a hole in a ramp takes values from the ramp around it
            hole = filled[0, channel, 1:3, 1:3]
            around = image[0, channel][known[0, 0]]
            assert around.min() < hole.min() and hole.max() < around.max()

    def test_a_large_hole_is_filled_everywhere(self):
        image = torch.zeros(1, 1, 16, 16)
        image[..., :, :2] = 4.0
        known = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
        known[..., :, :2] = True
        filled = fill_holes(image, known)
        assert bool(torch.isfinite(filled).all()) and float(filled[..., :, 2:].min()) > 0.0

    def test_an_image_with_nothing_known_is_left_as_it_is(self):
        image = torch.arange(32.0).view(2, 1, 4, 4)
        known = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
        known[0, 0, 0, 0] = True
        filled = fill_holes(image, known)
        assert torch.equal(filled[0], torch.zeros(1, 4, 4)) and torch.equal(filled[1], image[1])

    def test_a_mask_that_is_not_bool_raises(self):
        with pytest.raises(ValueError, match="known must be"):
            fill_holes(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
