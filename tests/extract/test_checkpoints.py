"""extract/checkpoints.py: random-weight checkpoints written here in the three real formats.

The PySlowFast and Caffe2 names are produced by walking the pytorchvideo modules by attribute
(an independent path from the converter's regexes); after loading, every tensor is checked at its
module attribute.
"""

import pickle

import numpy as np
import pytest
import torch

from stagecache.extract.backbones import build_backbone
from stagecache.extract.checkpoints import CheckpointError, caffe2_name_to_pyslowfast, load_checkpoint

torch.set_num_threads(1)

BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def _bn(mod):
    return {"weight": mod.weight, "bias": mod.bias, "running_mean": mod.running_mean,
            "running_var": mod.running_var}


def reference_entries(net, head=None):
    """[(pyslowfast_key, caffe2_name, target tensor)] for a pytorchvideo SlowFast or ResNet (`head`:
    the module whose `proj` is the classifier, when it is not the last block: the RoI head)."""
    from pytorchvideo.models.net import MultiPathWayWithFuse
    from pytorchvideo.models.resnet import ResStage
    from pytorchvideo.models.stem import ResNetBasicStem
    blocks = [b for b in net.blocks if isinstance(b, (ResNetBasicStem, MultiPathWayWithFuse, ResStage))]
    multi = isinstance(blocks[0], MultiPathWayWithFuse)
    out = []
    for k, blk in enumerate(blocks, start=1):
        paths = list(blk.multipathway_blocks) if multi else [blk]
        for p, pb in enumerate(paths):
            t = "t_" if p == 1 else ""
            if k == 1:
                out.append((f"s1.pathway{p}_stem.conv.weight", f"{t}conv1_w", pb.conv.weight))
                for n, v in _bn(pb.norm).items():
                    out.append((f"s1.pathway{p}_stem.bn.{n}", f"{t}res_conv1_bn_{BN[n]}", v))
                continue
            for j, rb in enumerate(pb.res_blocks):
                pre, c2 = f"s{k}.pathway{p}_res{j}", f"{t}res{k}_{j}"
                if rb.branch1_conv is not None:
                    out.append((f"{pre}.branch1.weight", f"{c2}_branch1_w", rb.branch1_conv.weight))
                    for n, v in _bn(rb.branch1_norm).items():
                        out.append((f"{pre}.branch1_bn.{n}", f"{c2}_branch1_bn_{BN[n]}", v))
                for x in "abc":
                    conv, norm = getattr(rb.branch2, f"conv_{x}"), getattr(rb.branch2, f"norm_{x}")
                    out.append((f"{pre}.branch2.{x}.weight", f"{c2}_branch2{x}_w", conv.weight))
                    for n, v in _bn(norm).items():
                        out.append((f"{pre}.branch2.{x}_bn.{n}", f"{c2}_branch2{x}_bn_{BN[n]}", v))
        if multi and k <= 4:
            fuse = blk.multipathway_fusion
            last = len(blk.multipathway_blocks[1].res_blocks) - 1 if k > 1 else 0
            c2 = "t_pool1_subsample" if k == 1 else f"t_res{k}_{last}_branch2c_bn_subsample"
            out.append((f"s{k}_fuse.conv_f2s.weight", f"{c2}_w", fuse.conv_fast_to_slow.weight))
            for n, v in _bn(fuse.norm).items():
                out.append((f"s{k}_fuse.bn.{n}", f"{c2}_bn_{BN[n]}", v))
    head = net.blocks[-1] if head is None else head
    out.append(("head.projection.weight", "pred_w", head.proj.weight))
    out.append(("head.projection.bias", "pred_b", head.proj.bias))
    return out


def _tiny(name):
    kw = dict(stem_dim_outs=(8, 1)) if name.startswith("slowfast") else dict(stem_dim_out=4)
    return build_backbone(name, model_num_class=3, **kw)


def _random_like(entries, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {key: torch.rand(t.shape, generator=g) + 0.1 for key, _, t in entries}


def _check_loaded(entries, values_by_index):
    for i, (_, _, target) in enumerate(entries):
        torch.testing.assert_close(target.detach().float(), values_by_index[i].float())


@pytest.mark.parametrize("name", ["slowfast_r50", "i3d_r50", "slowfast_r50_detection"])
def test_pyslowfast_checkpoint(tmp_path, name):
    bb = _tiny(name)
    if name.endswith("_detection"):
        # PySlowFast's AVA models: the trunk, then the RoI head's projection; pytorchvideo's detection
        # model holds the trunk under `.model` and the RoI head beside it (`.detection_head`).
        entries = reference_entries(bb.net.model, head=bb.net.detection_head)
    else:
        entries = reference_entries(bb.net)
    vals = _random_like(entries)
    path = tmp_path / "ckpt.pyth"
    torch.save({"epoch": 10, "model_state": vals, "optimizer_state": {}, "cfg": "TRAIN: ..."}, path)
    report = load_checkpoint(bb.net, path)
    assert report.format == "pyslowfast"
    assert report.complete, report.describe()
    _check_loaded(entries, [vals[k] for k, _, _ in entries])


def test_caffe2_pickle(tmp_path):
    bb = _tiny("slowfast_r50")
    entries = reference_entries(bb.net)
    vals = _random_like(entries, seed=1)
    blobs = {c2: vals[k].numpy() for k, c2, _ in entries}
    blobs["conv1_w_momentum"] = np.zeros(3, np.float32)  # optimizer state in real files: skipped
    blobs["model_iter"] = np.array([1000])
    path = tmp_path / "SLOWFAST_8x8_R50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    report = load_checkpoint(bb.net, path)
    assert report.format == "caffe2" and report.complete, report.describe()
    _check_loaded(entries, [vals[k] for k, _, _ in entries])
    assert caffe2_name_to_pyslowfast("res4_5_branch2c_bn_riv") == "s4.pathway0_res5.branch2.c_bn.running_var"


def test_pytorchvideo_hub_formats(tmp_path):
    src, dst = _tiny("slowfast_r50"), _tiny("slowfast_r50")
    with torch.no_grad():
        for p in src.net.parameters():
            p.uniform_(-1, 1)
    sd = src.net.state_dict()
    torch.save({"model_state": sd}, tmp_path / "a.pyth")
    torch.save(sd, tmp_path / "b.pt")
    for f in ("a.pyth", "b.pt"):
        report = load_checkpoint(dst.net, tmp_path / f)
        assert report.format == "pytorchvideo" and report.complete
        for k, v in dst.net.state_dict().items():
            torch.testing.assert_close(v, sd[k])


def test_missing_and_unexpected_keys_fail_unless_partial(tmp_path):
    bb = _tiny("slowfast_r50")
    sd = dict(bb.net.state_dict())
    dropped = "blocks.2.multipathway_blocks.0.res_blocks.0.branch2.conv_b.weight"
    del sd[dropped]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bb.net, tmp_path / "c.pt")
    assert dropped in str(e.value) and "extra.weight" in str(e.value)
    report = load_checkpoint(bb.net, tmp_path / "c.pt", allow_partial=True)
    assert report.missing == [dropped] and report.unexpected == ["extra.weight"]
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(bb.net, tmp_path / "nope.pyth")
