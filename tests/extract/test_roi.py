"""extract/roi.py: the pooled vector reproduces pytorchvideo's own detection head; levels vs loops."""

import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import roi_align

from stagecache.extract.backbones import build_backbone
from stagecache.extract.roi import pool_rois
from tests.comparisons import assert_informative

torch.set_num_threads(1)

TINY_DET = dict(model_depth=50, stem_dim_outs=(8, 1), model_num_class=5,
                stage_conv_a_kernel_sizes=(((1, 1, 1),) * 4, ((1, 1, 1),) * 4),
                sampling_overrides=dict(frames=4, rate=8, short_side=64))


def _boxes(n, g):
    xy = torch.rand(n, 2, generator=g) * 0.6
    wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("aligned", [True, False])
def test_pooled_through_detection_head_equals_pytorchvideo(aligned):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    bb = build_backbone("slowfast_r50_detection", **TINY_DET)
    net = bb.net.eval()
    # random BN statistics so the check covers them, not just identity norms
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    # pytorchvideo builds its head with torchvision RoIAlign(aligned=False); PySlowFast uses
    # aligned=True. Both are checked: the head's own layer is switched to the tested setting.
    net.detection_head.roi_layer.aligned = aligned
    clips = torch.randint(0, 256, (2, 16, 64, 96, 3), dtype=torch.uint8, generator=g)
    inputs = bb.pack(clips)
    boxes = _boxes(5, g)
    idx = torch.tensor([0, 0, 1, 1, 1])
    scale = torch.tensor([96, 64, 96, 64.0])
    with torch.no_grad():
        ref = net([x.clone() for x in inputs], torch.cat([idx[:, None].float(), boxes * scale], 1))
        maps = bb(inputs)
        feats = pool_rois(maps, boxes, idx, input_size=(64, 96), stride=bb.stride, aligned=aligned)
        head = net.detection_head
        ours = head.activation(head.proj(feats["pooled"]))
    assert bb.stride == 16 and feats["pooled"].shape == (5, bb.out_channels)
    assert bb.out_channels == 256 + 32
    assert_informative(ref, "pytorchvideo detection-head output", min_len=5)
    assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_levels_match_direct_loops():
    g = torch.Generator().manual_seed(2)
    slow = torch.randn(2, 6, 4, 5, 7, generator=g)   # (B, C, T, h, w)
    fast = torch.randn(2, 3, 16, 5, 7, generator=g)
    boxes = _boxes(3, g)
    idx = torch.tensor([1, 0, 1])
    size, stride = (80, 112), 16
    out = pool_rois([slow, fast], boxes, idx, input_size=size, stride=stride,
                    levels=("roi", "temporal", "context"), context_grid=None)
    out_g = pool_rois([slow, fast], boxes, idx, input_size=size, stride=stride,
                      levels=("context",), context_grid=1)
    for n in range(3):
        b = int(idx[n])
        box = boxes[n] * torch.tensor([112, 80, 112, 80.0])
        roi1 = torch.cat([torch.zeros(1), box])[None]
        fmap = torch.cat([slow[b].mean(1), fast[b].mean(1)], 0)[None]  # (1, C, h, w)
        r = roi_align(fmap, roi1, 7, 1 / stride, 0, True)[0]
        assert_close(out["roi"][n], r)
        assert_close(out["pooled"][n], r.flatten(1).max(1).values)
        for t in range(4):
            ft = torch.cat([slow[b, :, t], fast[b, :, 4 * t:4 * t + 4].mean(1)], 0)[None]
            rt = roi_align(ft, roi1, 7, 1 / stride, 0, True)[0]
            assert_close(out["temporal"][n, t], rt.flatten(1).max(1).values)
    for b in range(2):
        full = torch.cat([slow[b].mean(1), fast[b].mean(1)], 0)
        assert_close(out["context"][b], full)
        assert_close(out_g["context"][b, :, 0, 0], full.mean((1, 2)))


def test_roialign_geometry_on_a_ramp():
    # map value = column index: with aligned=True, bin centres of a box [x1, x2] (pixels) sit at
    # x1/s - 0.5 + (i + 0.5) * (x2 - x1) / (7 s); the max is the right-most bin centre.
    h, w, s = 6, 10, 16
    ramp = torch.arange(w, dtype=torch.float32).expand(1, 1, 1, h, w).clone()  # (B, C, T, h, w)
    box = torch.tensor([[0.2, 0.2, 0.6, 0.7]])
    out = pool_rois([ramp], box, torch.zeros(1, dtype=torch.long), input_size=(h * s, w * s), stride=s)
    x1, x2 = 0.2 * w, 0.6 * w  # in map cells
    expect = x1 - 0.5 + 6.5 * (x2 - x1) / 7
    assert_close(out["pooled"], torch.tensor([[expect]]))


def test_unknown_level_rejected():
    with pytest.raises(ValueError, match="valid: roi, temporal, context"):
        pool_rois([torch.zeros(1, 2, 1, 3, 3)], torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                  input_size=(48, 48), stride=16, levels=("bogus",))
