import numpy as np
import pytest
import torch
from PIL import Image

import diffmorph
from diffmorph.cli import main
from diffmorph.io.flow import forward_flows, read_flo, write_flo, write_npy
from diffmorph.ops import MapScales


def test_flo_and_npy_round_trip(tmp_path):
    flow = np.random.default_rng(0).normal(size=(5, 7, 2)).astype(np.float32)
    write_flo(tmp_path / "f.flo", flow)
    write_npy(tmp_path / "f.npy", flow)
    data = (tmp_path / "f.flo").read_bytes()
    assert data[:4] == b"PIEH" and len(data) == 12 + 5 * 7 * 2 * 4
    assert np.array_equal(read_flo(tmp_path / "f.flo"), flow)
    assert np.array_equal(np.load(tmp_path / "f.npy"), flow)
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        write_flo(tmp_path / "g.flo", np.zeros((5, 7)))
    (tmp_path / "bad.flo").write_bytes(b"nope" * 4)
    with pytest.raises(ValueError, match=r"not a \.flo"):
        read_flo(tmp_path / "bad.flo")


def test_forward_flows_negate_the_other_direction_warp():
    height, width = 20, 30
    maps = torch.zeros(16, 84, 84)
    maps[8 + 6] = 2.0  # B->A warp map, y: dy = 2 * 20 px * 0.05 = 2 px
    maps[8 + 7] = -1.0  # B->A warp map, x: dx = -1 * 30 px * 0.05 = -1.5 px
    maps[7] = 1.0  # A->B warp map, x: dx = 1.5 px
    flows = forward_flows(maps, MapScales().warp, height, width)
    assert flows["a_to_b"].shape == (height, width, 2)
    np.testing.assert_allclose(flows["a_to_b"][..., 0], 1.5, atol=1e-4)  # dx: A's pixels land 1.5 px right in B
    np.testing.assert_allclose(flows["a_to_b"][..., 1], -2.0, atol=1e-4)  # dy
    np.testing.assert_allclose(flows["b_to_a"][..., 0], -1.5, atol=1e-4)
    np.testing.assert_allclose(flows["b_to_a"][..., 1], 0.0, atol=1e-4)


def test_cli_format_flow_writes_each_direction(tmp_path, image_files, capsys):
    out = tmp_path / "out"
    code = main(["morph", *map(str, image_files), "-o", str(out), "--steps", "3", "--size", "32", "--frames", "3",
                 "--format", "flow", "-q"])
    assert code == 0, capsys.readouterr().err
    for direction in ("a_to_b", "b_to_a"):
        flow = np.load(out / f"flow_{direction}.npy")
        assert flow.shape == (40, 48, 2) and flow.dtype == np.float32
        assert np.array_equal(read_flo(out / f"flow_{direction}.flo"), flow)
        assert Image.open(out / f"flow_{direction}.png").size == (48, 40)
    assert not (out / "morph.mp4").exists()
    result = diffmorph.load_maps(out / "maps.safetensors")
    expected = forward_flows(result.segments[0].maps, result.config.warp_scale, 40, 48)["a_to_b"]
    np.testing.assert_allclose(np.load(out / "flow_a_to_b.npy"), expected)
