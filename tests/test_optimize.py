import pytest
import torch

from diffmorph.config import MorphConfig
from diffmorph.errors import FitDivergedError
from diffmorph.ops import flow_from_warp_map, psnr, resize
from diffmorph.optimize import fit_maps, scales_of
from diffmorph.renderer import Renderer
from synthetic import shifted_pair

CPU = torch.device("cpu")


def test_recovers_a_known_warp():
    a, b = shifted_pair(64, shift=(3.0, 4.0))  # B is A moved 3 px down and 4 px right
    config = MorphConfig(size=64, steps=150, lr=1e-3)
    calls = []
    fit = fit_maps(a, b, config, CPU, progress=lambda done, loss: calls.append((done, loss)))

    assert len(fit.losses) == 150
    assert fit.losses[0] / fit.losses[-1] > 100
    assert calls[-1] == (150, fit.losses[-1])

    renderer = Renderer(fit.maps, a, b, scales_of(config), CPU)
    assert psnr(renderer.a_to_b(), b) > 40 > psnr(a, b) + 10
    assert psnr(renderer.b_to_a(), a) > 40

    # The motion is explained by the warp map, not painted by the colour maps.
    maps = resize(fit.maps.unsqueeze(0), 64, 64)
    inner = (slice(None), slice(16, 48), slice(16, 48))
    flow_ab = flow_from_warp_map(maps[:, 6:8], config.warp_scale)[0][inner]
    flow_ba = flow_from_warp_map(maps[:, 14:16], config.warp_scale)[0][inner]
    assert flow_ab[0].median().item() == pytest.approx(3.0, abs=0.75)
    assert flow_ab[1].median().item() == pytest.approx(4.0, abs=0.75)
    assert flow_ba[0].median().item() == pytest.approx(-3.0, abs=0.75)
    assert flow_ba[1].median().item() == pytest.approx(-4.0, abs=0.75)


def test_same_seed_is_deterministic_on_cpu():
    a, b = shifted_pair(32)
    config = MorphConfig(size=32, steps=5, seed=11)
    first, again = fit_maps(a, b, config, CPU), fit_maps(a, b, config, CPU)
    assert torch.equal(first.maps, again.maps)
    assert first.losses == again.losses
    other = fit_maps(a, b, MorphConfig(size=32, steps=5, seed=12), CPU)
    assert not torch.equal(first.maps, other.maps)


def test_maps_do_not_depend_on_image_resolution_beyond_the_working_size():
    a, b = shifted_pair(64)
    config = MorphConfig(size=32, steps=3)
    fit = fit_maps(a, b, config, CPU)
    assert fit.maps.shape == (16, 84, 84)
    assert fit.maps.dtype == torch.float32


def test_divergence_raises_with_advice():
    a, b = shifted_pair(32)
    with pytest.raises(FitDivergedError, match=r"loss became (nan|inf).*lower --lr"):
        fit_maps(a, b, MorphConfig(size=32, steps=40, lr=1e12), CPU)
