"""Checkpoints of the video transformers, read into the transformers module's own names with strict
key checking (the mapping below is this project's; read against the original models' code).

Files users hold:
  a Hugging Face model folder   config.json + model.safetensors (offline: read with `json` and
                                `safetensors`, nothing fetched). `VideoMAEModel` / `VJEPA2Model` keys,
                                or under `videomae.` / `vjepa2.` when saved from a task model.
  a `.safetensors` file         either naming (told apart by the `blocks.` / `patch_embed.` keys).
  a `.pth` / `.pt` / `.bin`     read only through `core.safe_pickle.torch_load` (weights_only; nothing
                                in the file runs). VideoMAE / VideoMAE V2 (`utils.save_model`): weights
                                under `model` or `module` (their `--model_key model|module`), beside an
                                `args` argparse.Namespace of plain values, admitted as data. V-JEPA 2
                                (`app/vjepa/train.py`): `encoder`, `predictor`, `target_encoder`, ...;
                                `target_encoder` is what its evaluations load, else `encoder`.

Original key layouts and where each goes:
  VideoMAE (V1 and V2)    prefixes `module.` / `backbone.` / `encoder.` (pretraining) are dropped;
                          `decoder.*`, `encoder_to_decoder.*`, `mask_token` (the pretraining decoder) and
                          `head.*`, `fc_norm.*` (a fine-tuned classifier) are dropped;
    patch_embed.proj.*          -> embeddings.patch_embeddings.projection.*
    blocks.i.norm1 / norm2      -> encoder.layer.i.layernorm_before / layernorm_after
    blocks.i.attn.qkv.weight    -> encoder.layer.i.attention.attention.{query,key,value}.weight (split in 3)
    blocks.i.attn.q_bias/v_bias -> ...query.bias / ...value.bias (the key has no bias; transformers 4.x
                                   and the Hub's files: ...q_bias / ...v_bias, either is accepted)
    blocks.i.attn.proj.*        -> encoder.layer.i.attention.output.dense.*
    blocks.i.mlp.fc1 / fc2      -> encoder.layer.i.intermediate.dense / output.dense
    norm.*                      -> layernorm.*
  A fine-tuned classification checkpoint (`use_mean_pooling`) has `fc_norm` and no `norm`: VideoMAE's
  AVA code loads it non-strictly, so its `norm` keeps its initial weight 1 / bias 0; the same here
  (`final_norm: "unit"` in the report and the store), every other key strict.
  V-JEPA 2                `module.` / `backbone.` dropped; `pos_embed` dropped (RoPE models carry an
                          unused one: vjepa2's hub loader loads non-strictly for it);
    patch_embed.proj.*          -> encoder.embeddings.patch_embeddings.proj.*
    blocks.i.norm1 / norm2      -> encoder.layer.i.norm1 / norm2
    blocks.i.attn.qkv.*         -> encoder.layer.i.attention.{query,key,value}.* (weight and bias split)
    blocks.i.attn.proj.*        -> encoder.layer.i.attention.proj.*
    blocks.i.mlp.fc1 / fc2      -> encoder.layer.i.mlp.fc1 / fc2
    norm.*                      -> encoder.layernorm.*
  Only the encoder is checked and loaded (the predictor is never run).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn as nn

from stagecache.core.safe_pickle import torch_load
from stagecache.extract.checkpoints import CheckpointError, LoadReport, match_state

_ORIGINAL = re.compile(r"^(blocks\.\d+\.|patch_embed\.|norm\.)")
# (prefix, what it is) of keys dropped on purpose, per family
_DROP = {
    "videomae": (("decoder.", "pretraining decoder"), ("encoder_to_decoder.", "pretraining decoder"),
                 ("mask_token", "pretraining decoder"), ("head.", "classifier head"),
                 ("fc_norm.", "classifier norm"), ("classifier.", "classifier head")),
    "vjepa2": (("predictor.", "predictor"), ("pooler.", "attentive probe"), ("classifier.", "classifier head"),
               ("pos_embed", "unused position embedding of a RoPE model")),
}
_VIDEOMAE_BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after",
                   "attn.proj": "attention.output.dense", "mlp.fc1": "intermediate.dense",
                   "mlp.fc2": "output.dense"}
_VJEPA2_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.proj", "mlp.fc1": "mlp.fc1",
                 "mlp.fc2": "mlp.fc2"}


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def original_to_transformers(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """An original VideoMAE / V-JEPA 2 encoder state dict (prefixes already stripped) in the names of
    `VideoMAEModel` / `VJEPA2Model`; keys it does not know are kept (the strict check names them)."""
    out: dict[str, torch.Tensor] = {}
    table, root = (_VIDEOMAE_BLOCK, "encoder.layer") if family == "videomae" else (_VJEPA2_BLOCK, "encoder.layer")
    attn = "attention.attention" if family == "videomae" else "attention"
    for key, v in state.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key)
        if key.startswith("patch_embed.proj."):
            tail = key.rsplit(".", 1)[1]
            out[("embeddings.patch_embeddings.projection." if family == "videomae"
                 else "encoder.embeddings.patch_embeddings.proj.") + tail] = v
        elif key.startswith("norm.") and key.count(".") == 1:
            out[("layernorm." if family == "videomae" else "encoder.layernorm.") + key.split(".")[1]] = v
        elif m and m.group(2) == "attn.qkv":
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[f"{root}.{m.group(1)}.{attn}.{name}.{m.group(3)}"] = part.contiguous()
        elif m and m.group(2) in table:
            out[f"{root}.{m.group(1)}.{table[m.group(2)]}.{m.group(3)}"] = v
        elif family == "videomae" and re.fullmatch(r"blocks\.\d+\.attn\.[qv]_bias", key):
            i, which = key.split(".")[1], key.split(".")[3][0]
            out[f"{root}.{i}.{attn}.{'query' if which == 'q' else 'value'}.bias"] = v
        else:
            out[key] = v
    return out


def _read_file(path: Path, family: str, trust_pickle: bool) -> tuple[dict, str]:
    """(raw state dict, format) of a checkpoint file or Hugging Face folder."""
    if path.is_dir():
        cfg_path, weights = path / "config.json", path / "model.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise CheckpointError(f"{path}: a Hugging Face model folder needs config.json and model.safetensors")
        try:
            model_type = json.loads(cfg_path.read_text()).get("model_type")
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: not a readable config.json ({e})") from None
        if model_type != family:
            raise CheckpointError(f"{cfg_path}: model_type {model_type!r} is not a {family} model")
        return _safetensors(weights), "hf-folder"
    if path.suffix == ".safetensors":
        return _safetensors(path), "safetensors"
    with torch.serialization.safe_globals([argparse.Namespace]):  # VideoMAE's saved `args`: plain values
        obj = torch_load(path, map_location="cpu", trust=trust_pickle)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, got {type(obj).__name__}")
    own = ("model", "module") if family == "videomae" else ("target_encoder", "encoder")
    # the other family's keys too: a file of the other model is then named by its weights' keys
    for k in own + tuple(k for k in ("model", "module", "target_encoder", "encoder") if k not in own):
        if isinstance(obj.get(k), dict):
            return obj[k], f"original:{k}"
    return obj, "original"


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def read_vit_checkpoint(path: str | Path, family: str, *, trust_pickle: bool = False
                        ) -> tuple[dict[str, torch.Tensor], str, dict[str, list[str]]]:
    """(state dict in the transformers model's names, format, {what: dropped keys})."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw, fmt = _read_file(path, family, trust_pickle)
    raw = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    original = any(_ORIGINAL.match(_strip(k, ("module.", "backbone.", "encoder."))) for k in raw)
    prefixes = ("module.", "backbone.", "encoder.") if family == "videomae" else ("module.", "backbone.")
    if not original:  # transformers names: a task model's base-model prefix
        prefixes = ("videomae.",) if family == "videomae" else ("vjepa2.",)
    dropped: dict[str, list[str]] = {}
    state = {}
    for k, v in raw.items():
        key = _strip(k, prefixes) if original or k.startswith(prefixes) else k
        why = next((w for p, w in _DROP[family] if key.startswith(p)), None)
        if why is not None:
            dropped.setdefault(why, []).append(k)
        else:
            state[key] = v
    if original:
        state = original_to_transformers(state, family)
        fmt = fmt if fmt != "safetensors" else "original:safetensors"
    return state, fmt, dropped


# VideoMAE's q / v biases: `q_bias` / `v_bias` parameters in transformers 4.x and in the Hub's
# model.safetensors files, `query.bias` / `value.bias` in transformers 5 (which renames on load)
_ALIASES = ((".attention.attention.q_bias", ".attention.attention.query.bias"),
            (".attention.attention.v_bias", ".attention.attention.value.bias"))


def _alias(key: str, own: dict) -> str:
    """`key` as the installed transformers names it, when it is one of the renamed ones."""
    if key in own:
        return key
    for a, b in _ALIASES:
        for x, y in ((a, b), (b, a)):
            if key.endswith(x) and key[: -len(x)] + y in own:
                return key[: -len(x)] + y
    return key


def load_vit_checkpoint(net: nn.Module, path: str | Path, *, family: str, name: str, allow_partial: bool = False,
                        trust_pickle: bool = False) -> tuple[LoadReport, dict]:
    """Load `path` into the transformers model `net`, strictly: missing, unexpected or mis-shaped keys
    raise `CheckpointError` (one line naming the file and the first keys) unless `allow_partial`.
    Returns the report and what the store records (`final_norm`, dropped key groups)."""
    state, fmt, dropped = read_vit_checkpoint(path, family, trust_pickle=trust_pickle)
    own = {k: v for k, v in net.state_dict().items() if family == "videomae" or k.startswith("encoder.")}
    info = {"final_norm": "checkpoint", "dropped": sorted(dropped)}
    norm = "layernorm." if family == "videomae" else None
    if norm and not any(k.startswith(norm) for k in state) and "classifier norm" in dropped:
        # fine-tuned classifier checkpoint: VideoMAE's AVA code leaves its `norm` at the initial 1 / 0
        for k in (norm + "weight", norm + "bias"):
            state[k] = torch.ones_like(own[k]) if k.endswith("weight") else torch.zeros_like(own[k])
        info["final_norm"] = "unit"
    state = {_alias(k, own): v for k, v in state.items()}
    good, report = match_state(state, own, LoadReport(path=str(path), format=fmt))
    if not report.complete and not allow_partial:
        raise CheckpointError(f"checkpoint does not match backbone {name} (use --allow-partial-checkpoint to "
                              "load the matching keys anyway): " + report.describe(limit=3))
    net.load_state_dict(good, strict=False)
    return report, info
