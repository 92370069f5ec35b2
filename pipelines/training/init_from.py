"""Weights from a checkpoint file: `train-head --init-from CKPT` and `predict --run CKPT`.

Accepted files (read with `torch.load(weights_only=True)`):
- a checkpoint of the official STAGE code (aimagelab/STAGE_action_detection `utils/checkpoints.py`:
  `{"model_state": <Stage state dict>, "optimizer_state", "epoch", "iteration"}`) or a bare
  `Stage` state dict: loaded into `stage` with `variant=official` through
  `heads.stage_official.from_official_state_dict`, keeping the official `logits` rows of the store's label
  ids (the official model has 81 outputs, column 0 background, column c = AVA id c);
- a checkpoint of this project (`best.pt` / `last.pt` of a run: `{"model": state dict, ...}`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import torch_load
from stagecache.heads.stage import STAGEHead
from stagecache.heads.stage_official import from_official_state_dict

OFFICIAL_KEY = "gat1.attention_0.W"  # present in every official Stage state dict


class InitFromError(UserError, ValueError):
    """The checkpoint does not fit the head or the store (message names the file)."""


def read_checkpoint(path: str) -> tuple[str, dict[str, torch.Tensor]]:
    """("official" | "stagecache", state dict) of a checkpoint file."""
    if not Path(path).is_file():
        raise InitFromError(f"{path}: no such checkpoint file")
    obj = torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("model_state"), dict):
        obj = obj["model_state"]
    if isinstance(obj, dict) and OFFICIAL_KEY in obj:
        return "official", obj
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return "stagecache", obj["model"]
    keys = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
    raise InitFromError(f"{path}: neither an official STAGE checkpoint (model_state with {OFFICIAL_KEY}) nor a "
                        f"train-head checkpoint (model); found {keys}")


def official_head(path: str, label_ids: list[int]) -> STAGEHead:
    """The official model of checkpoint `path` as a `variant=official` STAGEHead predicting `label_ids`."""
    kind, sd = read_checkpoint(path)
    if kind != "official":
        raise InitFromError(f"{path}: a train-head checkpoint; predict with --run <its run directory>")
    return _official(sd, path, label_ids)


def _official(sd: dict, path: str, label_ids: list[int]) -> STAGEHead:
    n_out = int(sd["logits.weight"].shape[0]) if "logits.weight" in sd else 0
    bad = [i for i in label_ids if not 0 < int(i) < n_out]
    if bad:
        raise InitFromError(f"{path}: the official model has {n_out} outputs (column c = id c), "
                            f"the store's label ids {bad[:5]} have none")
    try:
        return from_official_state_dict(sd, class_columns=[int(i) for i in label_ids]).float()
    except (KeyError, ValueError) as e:
        raise InitFromError(f"{path}: {e}") from None


def init_head_from(head: torch.nn.Module, path: str, label_ids: list[int]) -> str:
    """Load the weights of `path` into `head` (built for the store); returns the checkpoint kind."""
    kind, sd = read_checkpoint(path)
    if kind == "official":
        if not isinstance(head, STAGEHead) or head.variant != "official":
            raise InitFromError(f"{path}: an official STAGE checkpoint initialises --head stage "
                                "--head-arg variant=official only")
        sd = _official(sd, path, label_ids).state_dict()
    mine = head.state_dict()
    diff = sorted(set(mine) ^ set(sd))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs head {tuple(v.shape)}"
              for k, v in mine.items() if k in sd and sd[k].shape != v.shape]
    if diff or shapes:
        raise InitFromError(f"{path}: does not fit the head (other head options, feature dims or "
                            f"heads/layers?): {(shapes + [f'key {k}' for k in diff])[:4]}")
    head.load_state_dict({k: v.to(mine[k].dtype) for k, v in sd.items()})
    return kind


def official_predictor(path: str, store: str, device) -> tuple[STAGEHead, dict]:
    """`predict --run CKPT`: the official model of `path` for `store`'s label ids, and the run
    config `predict` reads (the store's only feature group, no extra levels, sigmoid scores)."""
    from stagecache.extract.store import open_store

    st = open_store(store)
    label_ids = [int(i) for i in st.attrs["label_ids"]]
    head = official_head(path, label_ids).to(device).eval()
    groups = [g for g in st.groups if g != "base" and "actor_pooled" in st.array_info(g)]
    if len(groups) != 1:
        raise InitFromError(f"store {st.path} holds features of {groups or 'no backbone'}; predict with an "
                            "official checkpoint needs exactly one feature group")
    got = st.array_info(groups[0])["actor_pooled"][0][1:]
    obj = st.array_info("base").get("object_feature", ((0, 0), ""))[0][1:] if "base" in st.groups else (0,)
    if got != (head.actor_dim,) or (head.use_objects and obj != (head.object_dim,)):
        raise InitFromError(f"{path}: the official model takes {head.actor_dim}-d actors and {head.object_dim}-d "
                            f"objects; store {st.path} has {groups[0]}/actor_pooled {got} and "
                            f"base/object_feature {obj}")
    cfg = {"head": "stage", "backbones": [], "combine": "mean", "levels": [], "num_object_classes": 0,
           "head_args": {"variant": "official", "num_heads": head.layers[0].num_heads,
                         "num_layers": len(head.layers)},
           "label_ids": label_ids, "temporal_radius": head.temporal_radius, "loss": "bce", "pose_ids": [],
           "bank_group": "", "actor_dim": head.actor_dim, "object_dim": head.object_dim}
    return head, cfg
