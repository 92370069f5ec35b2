"""extract/backbones.py: registry, the wrapper contract, sampling/pathway packing, res5 dilation."""

import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.backbones import BACKBONES, Sampling, build_backbone

torch.set_num_threads(1)

# tiny configs through the same constructor arguments as the published ones
TINY = {
    "slowfast_r50": dict(stem_dim_outs=(8, 1), sampling_overrides=dict(frames=4, short_side=64)),
    "slow_r50": dict(stem_dim_out=4, sampling_overrides=dict(frames=4, short_side=64)),
    "i3d_r50": dict(stem_dim_out=4, sampling_overrides=dict(frames=4, short_side=64)),
    "csn_r101": dict(model_depth=50, stem_dim_out=4, sampling_overrides=dict(frames=4, short_side=64)),
    "x3d_xs": dict(input_crop_size=64, width_factor=0.5, depth_factor=0.5,
                   sampling_overrides=dict(short_side=64)),
    "mvit_b": dict(spatial_size=64, temporal_size=4, depth=2, embed_dim_mul=[[1, 2.0]],
                   atten_head_mul=[[1, 2.0]], pool_q_stride_size=[[1, 1, 2, 2]],
                   sampling_overrides=dict(frames=4, short_side=64)),
}


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError) as e:
        build_backbone("resnet9000")
    for name in ("slowfast_r50", "slowfast_r101_16x8", "slowfast_r50_detection", "x3d_l", "mvit_b"):
        assert name in str(e.value)


def test_registry_covers_the_issue_list():
    expected = {"slowfast_r50", "slowfast_r101", "slowfast_r101_16x8", "slowfast_r50_detection",
                "slow_r50", "i3d_r50", "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "csn_r101", "mvit_b"}
    assert expected <= set(BACKBONES)


def test_published_slowfast_r50_metadata():
    bb = build_backbone("slowfast_r50")
    assert bb.channels == [2048, 256] and bb.out_channels == 2304 and bb.stride == 32
    s = bb.sampling
    assert (s.frames, s.rate, s.alpha, s.read_frames, s.read_rate) == (8, 8, 4, 32, 2)
    assert build_backbone("slowfast_r101_16x8").sampling.read_frames == 64
    meta = bb.metadata()
    assert meta["sampling"]["frames"] == 8 and meta["channels"] == [2048, 256]


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_contract(name):
    bb = build_backbone(name, **TINY[name])
    s = bb.sampling
    h, w = (64, 64) if s.square or name == "mvit_b" else (64, 96)
    clips = torch.randint(0, 256, (2, s.read_frames, h, w, 3), dtype=torch.uint8)
    with torch.no_grad():
        maps = bb(bb.pack(clips))
    assert len(maps) == bb.num_pathways == len(bb.channels)
    for m, c in zip(maps, bb.channels):
        assert m.shape[:2] == (2, c)
        assert m.shape[-2:] == (h // bb.stride, w // bb.stride), (name, m.shape, bb.stride)
    assert not any(p.requires_grad for p in bb.parameters())


def test_pack_matches_pyslowfast_pathway_sampling():
    bb = build_backbone("slowfast_r50", **TINY["slowfast_r50"])  # fast 16 frames, alpha 4
    t = bb.sampling.read_frames
    clips = torch.arange(t, dtype=torch.uint8).view(1, t, 1, 1, 1).expand(1, t, 2, 2, 3).contiguous()
    slow, fast = bb.pack(clips)
    mean, std = 0.45, 0.225
    frame_of = lambda x: torch.round((x[0, 0, :, 0, 0] * std + mean) * 255).long()  # noqa: E731
    assert frame_of(fast).tolist() == list(range(t))
    # reference: PySlowFast pack_pathway_output, index linspace(0, T - 1, T // alpha).long()
    ref = [int(i) for i in torch.linspace(0, t - 1, t // 4).long()]
    assert frame_of(slow).tolist() == ref
    assert_close(fast[0, 1, 3, 1, 1], torch.tensor((3 / 255 - mean) / std))


def test_res5_dilation_halves_the_stride():
    for name in ("slowfast_r50", "slow_r50"):
        bb = build_backbone(name, res5_dilation=True, **TINY[name])
        assert bb.stride == 16
        clips = torch.randint(0, 256, (1, bb.sampling.read_frames, 64, 64, 3), dtype=torch.uint8)
        with torch.no_grad():
            maps = bb(bb.pack(clips))
        assert all(m.shape[-2:] == (4, 4) for m in maps)
    with pytest.raises(ValueError, match="no res5 dilation"):
        build_backbone("x3d_xs", res5_dilation=True, **TINY["x3d_xs"])
    # the detection architecture is published dilated; it can be built undilated too
    assert build_backbone("slowfast_r50_detection", stem_dim_outs=(8, 1)).stride == 16
    assert build_backbone("slowfast_r50_detection", stem_dim_outs=(8, 1), res5_dilation=False).stride == 32


def test_sampling_validation():
    with pytest.raises(ValueError, match="multiple of alpha"):
        Sampling(frames=8, rate=6, alpha=4)
    with pytest.raises(ValueError, match="unknown sampling fields"):
        build_backbone("slow_r50", sampling_overrides=dict(bogus=1))
    with pytest.raises(ValueError, match="expects 16 frames"):
        bb = build_backbone("slowfast_r50", **TINY["slowfast_r50"])
        bb.pack(torch.zeros(1, 8, 4, 4, 3, dtype=torch.uint8))


def test_family_aliases_build_the_usual_variant():
    # Users type `extract features --backbone slowfast`.
    for alias, name in {"slowfast": "slowfast_r50", "slow": "slow_r50", "i3d": "i3d_r50", "x3d": "x3d_m",
                        "csn": "csn_r101", "mvit": "mvit_b"}.items():
        assert BACKBONES[alias] is BACKBONES[name]
