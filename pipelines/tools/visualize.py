"""`visualize`: pictures of a keyframe: boxes, predicted labels and scores, and what relation heads
attend to (STAGE: lines from an actor to its graph neighbours; ACAR-Net: HR²O attention heat maps).

Attention is the weights the head actually computed in its forward pass, as returned by its
`forward_with_attention` (heads/protocol.py, `Attention`); nothing is recomputed or patched here:
- kind "graph" (STAGE): per layer the head-averaged softmax weights of Eq. 6 over the graph's
  nodes and the graph's connectivity; drawn as lines from an actor to its neighbours.
- kind "spatial" (ACAR-Net, hr2o="nl"): Att^{ij}_{xy} (H, W, N, M) of every HR²O block; drawn as
  heat maps. Heads that return no attention get boxes and labels only.

Pictures are PNG files drawn with matplotlib's Agg backend at the frame's pixel size, frames
narrower than 640 px enlarged by an integer factor first (`display_image`), with no time-dependent
metadata, so the same inputs give the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stagecache.core.boxes import box_keys
from stagecache.core.errors import UserError
from stagecache.core.timekeys import TIME_EPS
from stagecache.extract.video import VideoReader
from stagecache.heads import Attention
from stagecache.pipelines.tools.visualize_args import VisualizeArgs  # also imported from here (no torch there)
from stagecache.pipelines.tools.visualize_draw import PALETTE, Edge, draw_heatmaps, draw_keyframe

__all__ = ["PALETTE", "Edge", "VisualizeArgs", "acar_actor_maps", "blank_canvas", "draw_heatmaps", "draw_keyframe",
           "read_frame", "run_visualize", "stage_edges"]


# ----------------------------------------------------------------------------- frames


class FrameTimeError(UserError, ValueError):
    """The asked keyframe is not inside the video: the message names it, its duration and the offset."""


def read_frame(path: str | Path, seconds: float, *, timestamp: float | None = None,
               time_offset: float = 0.0) -> np.ndarray:
    """The frame shown at `seconds` into the video (last frame with time <= seconds), (H, W, 3) uint8.
    A time outside the video is an error (the reader would give its last frame): `timestamp` and
    `time_offset`, when given, are what the user asked, named in the message."""
    with VideoReader(path) as reader:  # extract/video.py's seeking and frame choice
        if not -TIME_EPS <= seconds <= reader.duration + TIME_EPS:
            asked = (f"--timestamp {timestamp:g} - --time-offset {time_offset:g} = {seconds:g} s" if timestamp is not None
                     else f"{seconds:g} s")
            hint = ("; AVA's 15-minute clips and the synthetic videos start at 900 s: --time-offset 900"
                    if time_offset == 0 and timestamp is not None and timestamp >= 900 else "")
            raise FrameTimeError(f"video {path} is {reader.duration:.2f} s long; {asked} is outside it{hint}")
        return reader.read_times(np.array([float(seconds)]))[0]


def blank_canvas(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 200, dtype=np.uint8)


# ----------------------------------------------------------------------------- attention (heads.Attention)


def stage_edges(att: Attention, layer: int, actors: list[int], nodes_same_kf: list[int],
                min_weight: float = 0.0) -> list[Edge]:
    """Edges from each chosen actor to the connected nodes of its own keyframe (not itself)."""
    W, C = att.weights[layer], att.connected[layer]
    out = []
    for i in actors:
        for j in nodes_same_kf:
            if j != i and bool(C[i, j]) and float(W[i, j]) > min_weight:
                out.append(Edge(i, j, float(W[i, j])))
    return out


def acar_actor_maps(att: torch.Tensor, actors: list[int]) -> np.ndarray:
    """For each actor i (query row), the attention it pays to the *other* actors at every location,
    sum_{j != i} Att^{ij}_{xy}: (len(actors), H, W)."""
    out = []
    for i in actors:
        a = att[:, :, i, :].clone()  # (H, W, M)
        if i < a.shape[-1]:
            a[:, :, i] = 0  # self-attention is not a relation
        out.append(a.sum(-1).float().cpu().numpy())
    return np.stack(out) if out else np.zeros((0, att.shape[0], att.shape[1]), dtype=np.float32)


# ----------------------------------------------------------------------------- the command


def top_labels(scores: np.ndarray, ids: list[int], names: dict[int, str], k: int, min_score: float):
    order = np.argsort(-scores, kind="stable")[:k]
    return [(names.get(ids[c], str(ids[c])), float(scores[c])) for c in order if scores[c] >= min_score]


def from_predictions(args: VisualizeArgs) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
    """Boxes of one keyframe of a predictions CSV and their top labels."""
    from stagecache.extract import ava_io
    from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP

    pred = ava_io.read_predictions(args.predictions)
    lm = ava_io.read_label_map(args.label_map or DEFAULT_LABEL_MAP)
    names = dict(zip(lm.ids, lm.names))
    keep = (pred.video == args.video_name) & (ava_io.timestamp_keys(pred.timestamp) == ava_io.timestamp_key(args.timestamp))
    if not keep.any():
        raise ValueError(f"{args.predictions}: no predictions for {args.video_name} at {args.timestamp}")
    box = pred.box[keep]
    uniq, inv = np.unique(box_keys(box), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    first = [int(np.nonzero(inv == u)[0][0]) for u in range(len(uniq))]
    order = sorted(range(len(uniq)), key=lambda u: first[u])  # boxes in file order
    boxes, labels = [], []
    for u in order:
        rows = np.nonzero(inv == u)[0]
        boxes.append(box[rows[0]])
        ids = pred.action[keep][rows].tolist()
        labels.append(top_labels(pred.score[keep][rows], ids, names, args.top_k, args.min_score))
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels


def _keyframe_batch(args: VisualizeArgs, device):
    """The trained head, its config and the HeadInput of the asked keyframe (+ temporal context)."""
    from stagecache.pipelines.training.run_dir import load_trained
    from stagecache.pipelines.training.split import SplitSpec, open_run_splits

    head, cfg = load_trained(args.run_dir, device)
    [data] = open_run_splits(args.run_dir, cfg, head, [SplitSpec(args.store, "visualize", args.boxes, args.score_threshold)],
                             device)
    store, g = data.store, data.graph
    if args.video_name not in g.video_names:
        raise ValueError(f"store {args.store} has no video {args.video_name!r}")
    v = g.video_names.index(args.video_name)
    hit = torch.nonzero((g.kf_video.cpu() == v) & ((g.kf_time.cpu() - args.timestamp).abs() < TIME_EPS)).flatten()
    if len(hit) == 0:
        raise ValueError(f"store {args.store}: no keyframe {args.video_name} {args.timestamp}")
    # From the split's source (pipelines/training/sources.py): a streamed split reads this window only.
    x = next(iter(data.source.batches([hit], float(cfg["temporal_radius"]), device=device))).x
    return head, cfg, store, x


def run_visualize(args: VisualizeArgs) -> list[Path]:
    """Write the keyframe picture (and ACAR-Net heat maps) into out_dir; returns the files."""
    out = Path(args.out_dir)
    stem = f"{args.video_name}_{args.timestamp:.3f}".replace(".", "_")
    image = (read_frame(args.video, args.timestamp - args.time_offset, timestamp=args.timestamp,
                        time_offset=args.time_offset) if args.video else blank_canvas(args.width, args.height))
    written = []
    title = f"{args.video_name} @ {args.timestamp:g}"
    if args.predictions:
        boxes, labels = from_predictions(args)
        draw_keyframe(out / f"{stem}.png", image, boxes, labels, title=title)
        return [out / f"{stem}.png"]

    from stagecache.pipelines.training import losses
    from stagecache.pipelines.training.steps import resolve_device

    device = resolve_device(args.device)
    head, cfg, store, x = _keyframe_batch(args, device)
    ids = cfg["label_ids"]
    names = dict(zip(ids, store.attrs["label_names"]))
    with torch.no_grad():
        logits, att = head.forward_with_attention(x)
    stage_att = att if att is not None and att.kind == "graph" else None
    acar_maps = att.weights if att is not None and att.kind == "spatial" else None
    pose_cols = losses.pose_columns(ids, cfg["pose_ids"])
    scores = losses.scores(logits.float().cpu(), cfg["loss"], pose_cols).numpy()  # (A, L)
    q = torch.nonzero(x.is_query.cpu()).flatten().tolist()  # actors of the asked keyframe
    qkf = int(x.actor_kf[q[0]]) if q else -1
    boxes = x.actor_box.cpu().numpy()[q]
    labels = [top_labels(scores[i], ids, names, args.top_k, args.min_score) for i in q]
    objs = torch.nonzero(x.object_kf.cpu() == qkf).flatten().tolist()
    obj_classes = store.attrs.get("object_classes") or []
    oc = x.object_class.cpu().tolist()
    onames = [obj_classes[oc[j]] if 0 <= oc[j] < len(obj_classes) else str(oc[j]) for j in objs]
    edges = []
    if stage_att is not None:
        # Node ids: actors of the batch, then its objects when the head used them (Attention "graph");
        # map to local drawing ids.
        use_obj = stage_att.weights[0].shape[0] == x.num_actors + x.num_objects if stage_att.weights else False
        node_ids = q + ([x.num_actors + j for j in objs] if use_obj else [])
        chosen = q if args.actor < 0 else [q[args.actor]]
        local = {n: k for k, n in enumerate(node_ids)}
        for e in stage_edges(stage_att, args.layer, chosen, node_ids):
            edges.append(Edge(local[e.src], local[e.dst], e.weight))
    draw_keyframe(out / f"{stem}.png", image, boxes, labels, object_boxes=x.object_box.cpu().numpy()[objs],
                  object_names=onames, edges=edges, title=f"{title} ({cfg['head']})")
    written.append(out / f"{stem}.png")
    if acar_maps:
        maps = acar_actor_maps(acar_maps[args.layer], q)
        draw_heatmaps(out / f"{stem}_acar_attention.png", image, boxes, maps,
                      [f"actor {k}: attention to other actors" for k in range(len(q))])
        written.append(out / f"{stem}_acar_attention.png")
    return written
