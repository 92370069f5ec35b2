"""Official STAGE checkpoints <-> `STAGEHead(variant="official")`.

The official model (aimagelab/STAGE_action_detection models/model.py, class `Stage`) names its
parameters `obj_reducer.*` (only when objects are wider than actors), per layer i (1-based)
`gat{i}.attention_{k}.W` (d, d_h) and `.a` (2 d_h, 1) for head k, `gat_fc{i}.*` and `l_norm{i}.*`
(no suffix for layer 1: `gat_fc`, `l_norm`), and `logits.*` (81 outputs, column 0 background,
column c = AVA id c). Ours: `object_reducer`, `layers.{i-1}.fc_h` (the heads' W^T stacked by
rows), `layers.{i-1}.attn_w` (row k = a_k), `layers.{i-1}.fc_out`, `layers.{i-1}.norm`, `classifier`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .stage import STAGEHead


def _official_names(i: int) -> tuple[str, str, str]:
    """models/model.py names of layer i (0-based): gat1, gat_fc, l_norm; gat2, gat_fc2, l_norm2; ..."""
    suffix = "" if i == 0 else str(i + 1)
    return f"gat{i + 1}", f"gat_fc{suffix}", f"l_norm{suffix}"


def from_official_state_dict(state_dict: dict[str, Tensor], *, class_columns: list[int] | None = None,
                             dropout: float = 0.5) -> STAGEHead:
    """A `variant="official"` STAGEHead holding the weights of the official `Stage` model
    (aimagelab/STAGE_action_detection models/model.py; the `model_state` of its checkpoints).

    class_columns: rows of the official `logits` layer to keep, in order (the official model has
    81 outputs, column 0 background, column c = AVA id c: pass the store's label ids); default
    every row but 0. Dims, heads and layers are read from the weights."""
    sd = {k: v for k, v in state_dict.items()}
    try:
        w0 = sd["gat1.attention_0.W"]
        logits_w = sd["logits.weight"]
    except KeyError as e:
        raise KeyError(f"not a state dict of the official Stage model: no {e.args[0]!r} "
                       f"(keys: {sorted(sd)[:6]}...)") from None
    dim = int(w0.shape[0])
    actor_dim = dim - 4
    num_heads = sum(1 for k in sd if k.startswith("gat1.attention_") and k.endswith(".W"))
    num_layers = sum(1 for i in range(len(sd)) if f"{_official_names(i)[0]}.attention_0.W" in sd)
    object_dim = int(sd["obj_reducer.weight"].shape[1]) if "obj_reducer.weight" in sd else actor_dim
    rows = list(range(1, logits_w.shape[0])) if class_columns is None else [int(c) for c in class_columns]
    if any(not 0 <= r < logits_w.shape[0] for r in rows):
        raise ValueError(f"class_columns {rows[:5]}... outside the official model's {logits_w.shape[0]} outputs")
    head = STAGEHead(actor_dim, object_dim, len(rows), num_layers=num_layers, num_heads=num_heads,
                     dropout=dropout, variant="official").to(w0.dtype)  # the checkpoint's precision
    dh = head.layers[0].head_dim
    ours: dict[str, Tensor] = {}
    if head.object_reducer is not None:
        ours["object_reducer.weight"], ours["object_reducer.bias"] = sd["obj_reducer.weight"], sd["obj_reducer.bias"]
    for i in range(num_layers):
        gat, fc, ln = _official_names(i)
        ours[f"layers.{i}.fc_h.weight"] = torch.cat([sd[f"{gat}.attention_{k}.W"].t() for k in range(num_heads)])
        ours[f"layers.{i}.attn_w"] = torch.stack([sd[f"{gat}.attention_{k}.a"].reshape(2 * dh) for k in range(num_heads)])
        for ours_name, theirs in ((f"layers.{i}.fc_out", fc), (f"layers.{i}.norm", ln)):
            ours[f"{ours_name}.weight"], ours[f"{ours_name}.bias"] = sd[f"{theirs}.weight"], sd[f"{theirs}.bias"]
    ours["classifier.weight"], ours["classifier.bias"] = logits_w[rows], sd["logits.bias"][rows]
    head.load_state_dict(ours)
    return head


def to_official_state_dict(head: STAGEHead, *, class_columns: list[int] | None = None,
                           num_outputs: int = 81) -> dict[str, Tensor]:
    """The inverse of `from_official_state_dict`: the official model's parameter names and
    shapes (logits rows not in `class_columns` are zero; default columns 1..num_classes)."""
    if head.variant != "official":
        raise ValueError("to_official_state_dict needs a STAGEHead with variant='official'")
    sd = head.state_dict()
    rows = list(range(1, head.num_classes + 1)) if class_columns is None else [int(c) for c in class_columns]
    out: dict[str, Tensor] = {}
    if head.object_reducer is not None:
        out["obj_reducer.weight"], out["obj_reducer.bias"] = sd["object_reducer.weight"], sd["object_reducer.bias"]
    for i, layer in enumerate(head.layers):
        gat, fc, ln = _official_names(i)
        dh = layer.head_dim
        w, a = sd[f"layers.{i}.fc_h.weight"], sd[f"layers.{i}.attn_w"]
        for k in range(layer.num_heads):
            out[f"{gat}.attention_{k}.W"] = w[k * dh:(k + 1) * dh].t().contiguous()  # (d, d_h)
            out[f"{gat}.attention_{k}.a"] = a[k].reshape(2 * dh, 1).clone()
        for ours_name, theirs in ((f"layers.{i}.fc_out", fc), (f"layers.{i}.norm", ln)):
            out[f"{theirs}.weight"], out[f"{theirs}.bias"] = sd[f"{ours_name}.weight"], sd[f"{ours_name}.bias"]
    lw = sd["classifier.weight"].new_zeros((num_outputs, head.dim))
    lb = sd["classifier.bias"].new_zeros(num_outputs)
    lw[rows], lb[rows] = sd["classifier.weight"], sd["classifier.bias"]
    out["logits.weight"], out["logits.bias"] = lw, lb
    return out
