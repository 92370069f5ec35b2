"""ViT per-box features (extract/vit/model.py + extract/roi.py) against a test-side reference that follows
VideoMAE's AVA detection code (tests/extract/vit/originals.py), for every name, at the pretraining size
and on a non-square clip of another size (position embeddings interpolated); every block's level
against that block's hidden state pooled the same way."""

import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.backbones import build_backbone
from stagecache.extract.roi import pool_rois
from stagecache.extract.vit import VIT_SPECS
from tests.comparisons import assert_informative
from tests.extract.vit.originals import ava_pool, ava_tokens, randomize, tiny

torch.set_num_threads(1)
BOXES = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.4, 0.1, 0.95, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.45, 0.5],
                      [0.6, 0.5, 0.9, 0.99]])
CLIP_OF = torch.tensor([0, 0, 1, 1, 1])


def _clips(bb, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, bb.sampling.read_frames, h, w, 3), dtype=torch.uint8, generator=g)


def _extract(bb, clips, layers):
    """The project's path: backbone maps, then roi.pool_rois with the backbone's declared settings."""
    with torch.no_grad():
        maps, per_layer = bb.forward_layers(bb.pack(clips), layers)
        kw = dict(input_size=tuple(clips.shape[2:4]), stride=bb.stride, aligned=bb.roi_aligned,
                  box_extend=bb.box_extend)
        out = {"last": pool_rois(maps, BOXES, CLIP_OF, **kw)["pooled"]}
        for n, m in per_layer.items():
            out[n] = pool_rois(m, BOXES, CLIP_OF, **kw)["pooled"]
    return out


# V-JEPA 2 takes square clips of its crop size only (transformers' RoPE): no other size, no interpolation
CASES = [(n, size) for n in VIT_SPECS for size in ("pretrain", "ava")
         if VIT_SPECS[n].family == "videomae" or size == "pretrain"]


@pytest.mark.parametrize("name,size", CASES)
def test_per_box_features_follow_the_ava_code(name, size):
    kw, samp = tiny(name)
    bb = build_backbone(name, sampling_overrides=samp, **kw).eval()
    randomize(bb.net, seed=3)
    p, spec = bb.patch, VIT_SPECS[name]
    h, w = (2 * p, 2 * p) if size == "pretrain" else (3 * p, 5 * p + 5)  # non-square, grid 3 x 5
    clips = _clips(bb, h, w)
    got = _extract(bb, clips, (1, 2, 3))
    x = bb.pack(clips)[0]
    with torch.no_grad():
        if spec.family == "videomae":
            hidden, last, grid = ava_tokens(bb.net, x, grid0=2, patch=p)
        else:  # no AVA code of its own: the transformers model's own hidden states, pooled as VideoMAE's AVA head
            o = bb.net(pixel_values_videos=x.permute(0, 2, 1, 3, 4), skip_predictor=True, output_hidden_states=True)
            hidden, last, grid = list(o.hidden_states[1:]), o.last_hidden_state, (2, h // p, w // p)
        ref = {"last": ava_pool(last, grid, BOXES, CLIP_OF, (h, w), p)}
        ref.update({n: ava_pool(hidden[n - 1], grid, BOXES, CLIP_OF, (h, w), p) for n in (1, 2, 3)})
    assert grid[1:] == ((2, 2) if size == "pretrain" else (3, 5))
    for k in ref:
        assert_informative(ref[k], f"{name} {k}", min_len=2, above=1e-4)
        assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)
    assert bb.run_info()["pos_embed_interpolated"] == (size == "ava")
    if spec.family == "videomae" and size == "pretrain":  # also the transformers model's own hidden states
        with torch.no_grad():
            o = bb.net(pixel_values=x.permute(0, 2, 1, 3, 4), output_hidden_states=True)
        assert_close(ava_pool(o.hidden_states[2], grid, BOXES, CLIP_OF, (h, w), p), got[2], rtol=1e-4, atol=1e-4)


def test_the_enlargement_and_alignment_matter():
    """The reference's box enlargement / aligned=False are what make it agree (not vacuous)."""
    kw, samp = tiny("videomae_vit_b")
    bb = build_backbone("videomae_vit_b", sampling_overrides=samp, **kw).eval()
    randomize(bb.net, seed=4)
    clips = _clips(bb, 48, 80)
    with torch.no_grad():
        maps = bb([bb.pack(clips)[0]])
        plain = pool_rois(maps, BOXES, CLIP_OF, input_size=(48, 80), stride=16)["pooled"]  # CNN defaults
    got = _extract(bb, clips, ())["last"]
    assert (plain - got).abs().max() > 1e-3


def test_vjepa2_refuses_a_clip_that_is_not_its_square():
    kw, samp = tiny("vjepa2_vit_l")
    bb = build_backbone("vjepa2_vit_l", sampling_overrides=samp, **kw).eval()
    assert bb.sampling.square
    with pytest.raises(ValueError, match="32 x 32 clips"):
        bb.forward_layers(bb.pack(_clips(bb, 32, 48)), ())
    with pytest.raises(ValueError, match="no block 4"):
        bb.forward_layers(bb.pack(_clips(bb, 32, 32)), (4,))
