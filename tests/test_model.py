import math

import pytest
import torch

from diffmorph.model import MAP_CHANNELS, NET_INPUT_SIZE, MapNet


@pytest.mark.parametrize("size", [32, 96, 200])
def test_prepare_then_forward_gives_84_by_84_maps(size):
    net = MapNet(generator=torch.Generator().manual_seed(0))
    prepared = MapNet.prepare(torch.randn(1, 8, size, size))
    assert prepared.shape == (1, 8, NET_INPUT_SIZE, NET_INPUT_SIZE)
    assert net(prepared).shape == (1, MAP_CHANNELS, 84, 84)


@pytest.mark.parametrize(("side", "maps"), [(54, 42), (13, 1)])
def test_a_smaller_input_side_gives_maps_twelve_pixels_smaller(side, maps):
    net = MapNet(generator=torch.Generator().manual_seed(0))
    prepared = MapNet.prepare(torch.randn(1, 8, 128, 128), side)
    assert prepared.shape == (1, 8, side, side)
    assert net(prepared).shape == (1, MAP_CHANNELS, maps, maps)


def test_an_input_side_that_leaves_no_maps_is_refused():
    with pytest.raises(ValueError, match="more than 12 pixels, got 12"):
        MapNet.prepare(torch.randn(1, 8, 32, 32), 12)


def test_glorot_uniform_weights_and_zero_biases():
    net = MapNet(generator=torch.Generator().manual_seed(0))
    convs = [m for m in net.layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 16]
    assert all(c.padding == (0, 0) and c.kernel_size == (5, 5) for c in convs)
    for conv in convs:
        fan_in = conv.in_channels * 25
        fan_out = conv.out_channels * 25
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound  # drawn from the whole range, not a narrower one
        assert torch.count_nonzero(conv.bias) == 0


def test_same_seed_same_weights_other_seed_other_weights():
    first = MapNet(generator=torch.Generator().manual_seed(3)).state_dict()
    again = MapNet(generator=torch.Generator().manual_seed(3)).state_dict()
    other = MapNet(generator=torch.Generator().manual_seed(4)).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["layers.0.weight"], other["layers.0.weight"])
