"""`extract features` with a tiny random VideoMAE / V-JEPA 2 on the synthetic AVA-format videos: the store's
per-box features and every --layers group equal the AVA-code reference on the decoded clip; the levels
roi / temporal / context have the ViT's shapes; the group records the grid and the interpolation."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.core.errors import UserError
from stagecache.extract.backbones import build_backbone
from stagecache.extract.features import ExtractArgs, run_extract
from stagecache.extract.random_init import RandomWeightsWarning
from stagecache.extract.store import open_store
from stagecache.extract.synthetic import make_video_dataset
from stagecache.extract.video import VideoReader
from tests.comparisons import assert_informative
from tests.extract.vit.originals import ava_pool, ava_tokens, tiny

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("vitds")
    make_video_dataset(d, n_videos=1, seconds=4, width=96, height=64, splits=("train",))
    return d


def _args(ds, out, name, **kw):
    bkw, samp = tiny(name)
    a = dict(split="train", videos=str(ds / "videos"), label_map=str(ds / "annotations/label_map.pbtxt"),
             annotations=str(ds / "annotations/train.csv"), proposals=str(ds / "annotations/train_proposals.csv"),
             out=str(out), random_init=True, backbone=name, backbone_kwargs=bkw, sampling_overrides=samp,
             time_offset=900.0, num_workers=1, progress=False, batch_size=2, device="cpu")
    a.update(kw)
    return ExtractArgs(**a)


def _reference(ds, t, k, name, short_side):
    """Keyframe k's boxes pooled from the decoded clip by the AVA-code reference (same seed as the run)."""
    bkw, samp = tiny(name)
    torch.manual_seed(0)
    bb = build_backbone(name, sampling_overrides=samp, **bkw).eval()
    v = t.video_names[int(t.kf_video[k])]
    s = bb.sampling
    with VideoReader(ds / "videos" / f"{v}.mp4", short_side=short_side, square=s.square, time_offset=900.0) as r:
        clip = r.read_clip(float(t.kf_time[k]), s.read_frames, s.read_rate)
    a0, a1 = int(t.kf_actor_offset[k]), int(t.kf_actor_offset[k + 1])
    boxes = torch.from_numpy(t.data["base/actor_box"][a0:a1].numpy() if hasattr(t.data["base/actor_box"], "numpy")
                             else np.asarray(t.data["base/actor_box"][a0:a1]))
    x = bb.pack(torch.from_numpy(clip[None]))[0]
    size, idx = clip.shape[1:3], torch.zeros(a1 - a0, dtype=torch.long)
    with torch.no_grad():
        if bb.family == "videomae":
            hidden, last, grid = ava_tokens(bb.net, x, grid0=2, patch=bb.patch)
        else:
            o = bb.net(pixel_values_videos=x.permute(0, 2, 1, 3, 4), skip_predictor=True, output_hidden_states=True)
            hidden, last = list(o.hidden_states[1:]), o.last_hidden_state
            grid = (2, size[0] // bb.patch, size[1] // bb.patch)
        ref = {0: ava_pool(last, grid, boxes, idx, size, bb.patch)}
        ref.update({n: ava_pool(hidden[n - 1], grid, boxes, idx, size, bb.patch) for n in range(1, 4)})
    return ref, (a0, a1), grid


@pytest.mark.parametrize("name", ["videomae_vit_b", "vjepa2_vit_l"])
def test_store_features_and_layer_groups_match_the_reference(ds, tmp_path, name):
    out = tmp_path / "train.zarr"
    with pytest.warns(RandomWeightsWarning):
        summary = run_extract(_args(ds, out, name, layers="all", save=("roi", "temporal", "context")))
    assert summary["done"] == 1 and not summary["failed"]
    st = open_store(str(out))
    groups = [name] + [f"{name}.l{n}" for n in (1, 2, 3)]
    assert set(groups) <= set(st.groups)
    t = st.load()
    short = tiny(name)[1]["short_side"]
    tol = dict(rtol=3e-3, atol=3e-3)  # float16 in the store
    for k in range(min(2, len(t.kf_time))):
        ref, (a0, a1), grid = _reference(ds, t, k, name, short)
        for n, g in zip((0, 1, 2, 3), groups):
            got = t.data[f"{g}/actor_pooled"][a0:a1].float()
            assert_informative(ref[n], f"{g} reference", min_len=2, above=tol["atol"])
            assert_close(got, ref[n], **tol)
    attrs = st.groups[name]
    assert attrs["random_init"] is True and attrs["roi_pooler"]["aligned"] is False
    assert attrs["roi_pooler"]["box_extend"] == [0.1, 0.05]
    assert st.groups[f"{name}.l2"]["layer"] == 2 and st.groups[f"{name}.l2"]["layer_of"] == name
    c = tiny(name)[0]["hidden_size"]
    assert tuple(t.data[f"{name}/actor_temporal"].shape[1:]) == (2, c)  # 4 frames / tubelet 2
    assert tuple(t.data[f"{name}/actor_roi"].shape[1:]) == (c, 7, 7)
    assert tuple(t.data[f"{name}/kf_context"].shape[1:]) == (c, *grid[1:])
    assert summary["token_grids"] == [list(grid)]
    assert summary["pos_embed_interpolated"] == (name == "videomae_vit_b")  # 48 x 72 frames: grid 3 x 4
    # a rerun resumes (nothing to do); other --layers are refused, --restart starts the layer groups over too
    again = run_extract(_args(ds, out, name, layers="all", save=("roi", "temporal", "context")))
    assert again["skipped"] == 1 and again["done"] == 0
    with pytest.raises(UserError, match="layers"):
        run_extract(_args(ds, out, name, layers="2", save=("roi", "temporal", "context")))
    run_extract(_args(ds, out, name, layers="2", save=("roi", "temporal", "context"), restart=True))
    t2 = open_store(str(out)).load()
    assert {f"{name}.l2"} == {g for g in open_store(str(out)).groups if ".l" in g}
    assert_close(t2.data[f"{name}.l2/actor_pooled"].float(), t.data[f"{name}.l2/actor_pooled"].float())


def test_layers_refused_for_a_cnn_and_past_the_depth(ds, tmp_path):
    with pytest.raises(ValueError, match="has no per-layer features"):
        _args(ds, tmp_path / "a.zarr", "videomae_vit_b", backbone="slow_r50", backbone_kwargs={},
              sampling_overrides={}, layers="2")
    with pytest.raises(ValueError, match="not a block number"):
        _args(ds, tmp_path / "a.zarr", "videomae_vit_b", layers="x")
    with pytest.raises(ValueError, match="has blocks 1..3, not 7"):
        run_extract(_args(ds, tmp_path / "b.zarr", "videomae_vit_b", layers="2,7"))
