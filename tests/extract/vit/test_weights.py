"""extract/vit/weights.py: every checkpoint layout users hold, written here in its real key layout from a
tiny transformers model, loads strictly into a fresh backbone and gives that model's own output; other
models / sizes are one-line errors naming the file and the first keys."""

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from stagecache.core.safe_pickle import UnsafePickleError
from stagecache.extract.backbones import BACKBONES, build_backbone
from stagecache.extract.checkpoints import CheckpointError
from stagecache.extract.vit import VIT_SPECS
from tests.extract.vit.originals import randomize, tiny, videomae_original, vjepa2_original

torch.set_num_threads(1)
VIDEOMAE = [n for n, s in VIT_SPECS.items() if s.family == "videomae"]
VJEPA2 = [n for n, s in VIT_SPECS.items() if s.family == "vjepa2"]


def _pair(name, blocks=3):
    """(source backbone with random weights, fresh backbone of the same tiny config, a clip batch)."""
    kw, samp = tiny(name, blocks)
    src = build_backbone(name, sampling_overrides=samp, **kw).eval()
    randomize(src.net, seed=len(name))
    dst = build_backbone(name, sampling_overrides=samp, **kw).eval()
    spec = VIT_SPECS[name]
    side = 2 * spec.patch  # the pretraining size: the transformers model's own forward accepts it
    clip = torch.randn(2, 3, samp["frames"], side, side, generator=torch.Generator().manual_seed(1))
    return src, dst, clip


def _own_output(bb, clip):
    """The transformers model's own forward, as (B, C, T', H', W')."""
    with torch.no_grad():
        if bb.family == "videomae":
            out = bb.net(pixel_values=clip.permute(0, 2, 1, 3, 4)).last_hidden_state
        else:
            out = bb.net(pixel_values_videos=clip.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state
    b, _, t, h, w = clip.shape
    return out.reshape(b, t // bb.tubelet, h // bb.patch, w // bb.patch, -1).permute(0, 4, 1, 2, 3)


def _features(bb, clip):
    with torch.no_grad():
        return bb([clip])[0]


def test_every_name_is_registered_and_builds_lazily():
    assert set(VIT_SPECS) <= set(BACKBONES)
    g = VIT_SPECS["videomae_v2_g"]
    assert (g.width, g.depth, g.patch, g.mlp, g.heads) == (1408, 40, 14, 6144, 16)


@pytest.mark.parametrize("name", VIDEOMAE)
@pytest.mark.parametrize("layout", ["pretrain", "finetune", "hf_folder", "safetensors"])
def test_videomae_layouts_load_strictly_and_match_the_model(name, layout, tmp_path):
    src, dst, clip = _pair(name)
    hf = src.net.state_dict()
    depth = src.num_layers
    expected = _own_output(src, clip)
    if layout == "pretrain":  # run_mae_pretraining: {"model": encoder.* + decoder, ...} with its args
        state = videomae_original(hf, depth, prefix="encoder.")
        state.update({"decoder.blocks.0.norm1.weight": torch.ones(16), "decoder.norm.weight": torch.ones(16),
                      "decoder.head.weight": torch.zeros(8, 16), "encoder_to_decoder.weight": torch.zeros(16, 32),
                      "mask_token": torch.zeros(1, 1, 16)})
        path = tmp_path / "checkpoint-799.pth"
        torch.save({"model": state, "optimizer": {"state": {}}, "epoch": 799,
                    "args": argparse.Namespace(model="pretrain_videomae_base_patch16_224", mask_ratio=0.9)}, path)
    elif layout == "finetune":  # a Kinetics fine-tune: fc_norm + head, no norm, under "module"
        state = videomae_original(hf, depth, norm=False)
        state.update({"fc_norm.weight": torch.ones(32), "fc_norm.bias": torch.zeros(32),
                      "head.weight": torch.zeros(400, 32), "head.bias": torch.zeros(400)})
        path = tmp_path / "vit_b_k400_ft.pth"
        torch.save({"module": state, "epoch": 34}, path)
        with torch.no_grad():  # VideoMAE's AVA code leaves that model's norm at its init: weight 1, bias 0
            src.net.layernorm.weight.fill_(1.0)
            src.net.layernorm.bias.zero_()
        expected = _own_output(src, clip)
    elif layout == "hf_folder":
        path = tmp_path / "videomae-hf"
        src.net.save_pretrained(path)
    else:
        path = tmp_path / "videomae.safetensors"
        save_file({k: v.contiguous() for k, v in videomae_original(hf, depth).items()}, str(path))
    report = dst.load_weights(path)
    assert report.complete
    assert dst.final_norm == ("unit" if layout == "finetune" else "checkpoint")
    assert_close(_features(dst, clip), expected)
    assert_close(_features(dst, clip), _own_output(dst, clip))


@pytest.mark.parametrize("name", VJEPA2)
@pytest.mark.parametrize("layout", ["pt", "hf_folder"])
def test_vjepa2_layouts_load_strictly_and_match_the_model(name, layout, tmp_path):
    src, dst, clip = _pair(name)
    expected = _own_output(src, clip)
    if layout == "pt":  # app/vjepa/train.py save_checkpoint: encoder, predictor, target_encoder, ...
        hf = src.net.state_dict()
        target = vjepa2_original(hf, src.num_layers)
        target["module.backbone.pos_embed"] = torch.zeros(1, 8, 32)  # the unused one RoPE checkpoints carry
        online = {k: v + 1.0 for k, v in target.items()}  # the online encoder: not what evaluations load
        path = tmp_path / "vitl.pt"
        torch.save({"encoder": online, "predictor": {"module.backbone.predictor_embed.weight": torch.zeros(4, 32)},
                    "target_encoder": target, "epoch": 10, "loss": 0.5, "batch_size": 8, "world_size": 1,
                    "lr": 1e-4}, path)
    else:
        path = tmp_path / "vjepa2-hf"
        src.net.save_pretrained(path)
    assert dst.load_weights(path).complete
    assert_close(_features(dst, clip), expected)


def test_wrong_model_or_size_is_one_line_naming_file_and_keys(tmp_path):
    src, _, _ = _pair("videomae_vit_b", blocks=3)
    path = tmp_path / "vit_b_pretrain.pth"
    torch.save({"model": videomae_original(src.net.state_dict(), 3, prefix="encoder.")}, path)
    # a checkpoint of another depth: the missing / unexpected blocks are named
    kw, samp = tiny("videomae_vit_b", blocks=2)
    with pytest.raises(CheckpointError) as e:
        build_backbone("videomae_vit_b", sampling_overrides=samp, **kw).load_weights(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and re.search(r"\d+ unexpected keys: encoder\.layer\.2\.", msg)
    # another width: shapes named
    kw, samp = tiny("videomae_vit_b")
    kw.update(hidden_size=64, intermediate_size=128)
    with pytest.raises(CheckpointError, match=r"shape-mismatched keys: embeddings\.patch_embeddings") as e:
        build_backbone("videomae_vit_b", sampling_overrides=samp, **kw).load_weights(path)
    assert "\n" not in str(e.value)
    # another model: a VideoMAE file into V-JEPA 2 names V-JEPA 2's missing keys and VideoMAE's unexpected ones
    kw, samp = tiny("vjepa2_vit_l")
    with pytest.raises(CheckpointError) as e:
        build_backbone("vjepa2_vit_l", sampling_overrides=samp, **kw).load_weights(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "missing keys: encoder.embeddings" in msg
    assert re.search(r"\d+ unexpected keys: encoder\.blocks\.0\.", msg)
    # a Hugging Face folder of the other family: refused by its config.json
    folder = tmp_path / "hf"
    src.net.save_pretrained(folder)
    with pytest.raises(CheckpointError, match="model_type 'videomae' is not a vjepa2 model"):
        build_backbone("vjepa2_vit_l", sampling_overrides=samp, **kw).load_weights(folder)
    # --allow-partial-checkpoint loads the rest and reports
    kw, samp = tiny("videomae_vit_b", blocks=2)
    report = build_backbone("videomae_vit_b", sampling_overrides=samp, **kw).load_weights(path, allow_partial=True)
    assert not report.complete and report.unexpected[0].startswith("encoder.layer.2.")


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "hook": print}, path)
    kw, samp = tiny("videomae_vit_b")
    with pytest.raises(UnsafePickleError, match="evil.pth"):
        build_backbone("videomae_vit_b", sampling_overrides=samp, **kw).load_weights(path)


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="VideoMAEConfig has no hiden_size"):
        build_backbone("videomae_vit_b", hiden_size=8)
