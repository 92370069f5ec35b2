"""`visualize`: pictures of a keyframe: boxes, predicted labels and scores, and what relation heads
attend to (STAGE: lines from an actor to its graph neighbours; ACAR-Net: HR²O attention heat maps).

Attention is the weights the head actually computed in its forward pass, as returned by its
`forward_with_attention` (heads/protocol.py, `Attention`); nothing is recomputed or patched here:
- kind "graph" (STAGE): per layer the head-averaged softmax weights of Eq. 6 over the graph's
  nodes and the graph's connectivity; drawn as lines from an actor to its neighbours.
- kind "spatial" (ACAR-Net, hr2o="nl"): Att^{ij}_{xy} (H, W, N, M) of every HR²O block; drawn as
  heat maps. Heads that return no attention get boxes and labels only.

Pictures are PNG files drawn with matplotlib's Agg backend at exactly the frame's pixel size, with
no time-dependent metadata, so the same inputs give the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stagecache.core.boxes import BOX_SETS, box_keys, check_box_set
from stagecache.core.timekeys import TIME_EPS
from stagecache.extract.video import VideoReader
from stagecache.heads import Attention

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#469990", "#9a6324"]


# ----------------------------------------------------------------------------- frames


def read_frame(path: str | Path, seconds: float) -> np.ndarray:
    """The frame shown at `seconds` into the video (last frame with time <= seconds), (H, W, 3) uint8."""
    with VideoReader(path) as reader:  # extract/video.py's seeking and frame choice
        return reader.read_times(np.array([float(seconds)]))[0]


def blank_canvas(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 200, dtype=np.uint8)


# ----------------------------------------------------------------------------- drawing


@dataclass
class Edge:
    src: int  # node index (actors first, then objects)
    dst: int
    weight: float


def _figure(width: int, height: int, dpi: int = 100):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    return fig, ax, plt


def _save(fig, plt, path: Path, dpi: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def draw_keyframe(path: str | Path, image: np.ndarray, actor_boxes: np.ndarray, labels: list[list[tuple[str, float]]],
                  *, object_boxes: np.ndarray | None = None, object_names: list[str] | None = None,
                  edges: list[Edge] = (), title: str = "") -> list[Edge]:
    """A keyframe with actor boxes and their labels, objects (dashed) and attention lines.

    Boxes are normalised x1y1x2y2; `labels[i]` is actor i's [(name, score)] list; an edge's nodes
    index actors then objects; line width and opacity grow with the weight. Writes a PNG of the
    image's size; returns the edges drawn."""
    import matplotlib.patches as patches

    h, w = image.shape[:2]
    fig, ax, plt = _figure(w, h)
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    objects = np.zeros((0, 4)) if object_boxes is None else np.asarray(object_boxes, dtype=np.float64)
    nodes = np.concatenate([np.asarray(actor_boxes, dtype=np.float64).reshape(-1, 4), objects.reshape(-1, 4)])
    scale = np.array([w, h, w, h])
    drawn = []
    wmax = max([e.weight for e in edges], default=1.0) or 1.0
    for e in edges:
        (x0, y0), (x1, y1) = _centre(nodes[e.src] * scale), _centre(nodes[e.dst] * scale)
        a = float(np.clip(e.weight / wmax, 0.15, 1.0))
        ax.plot([x0, x1], [y0, y1], color="yellow", linewidth=0.5 + 3.0 * a, alpha=a, solid_capstyle="round")
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{e.weight:.2f}", color="yellow", fontsize=6, ha="center")
        drawn.append(e)
    for j, b in enumerate(objects):
        x1, y1, x2, y2 = b * scale
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white",
                                       linestyle="--", linewidth=1.0))
        if object_names is not None:
            ax.text(x1, y2, object_names[j], color="white", fontsize=6, va="top")
    for i, b in enumerate(np.asarray(actor_boxes).reshape(-1, 4)):
        c = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = b * scale
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=1.5))
        text = "\n".join(f"{n} {s:.2f}" for n, s in labels[i]) if i < len(labels) else ""
        if text:
            ax.text(x1 + 1, y1 + 1, text, color="white", fontsize=6, va="top",
                    bbox={"facecolor": c, "alpha": 0.7, "pad": 1, "linewidth": 0})
    if title:
        ax.text(2, 2, title, color="black", fontsize=7, va="top", bbox={"facecolor": "white", "alpha": 0.7, "pad": 1})
    _save(fig, plt, Path(path))
    return drawn


def draw_heatmaps(path: str | Path, image: np.ndarray, actor_boxes: np.ndarray, maps: np.ndarray,
                  titles: list[str]) -> None:
    """One panel per actor: the frame, the actor's box and its attention map (h, w) over the frame
    (ACAR-Net Fig. 5). maps (A, h, w), each normalised to its own maximum. PNG of A frames side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    n = max(len(maps), 1)
    fig = plt.figure(figsize=(n * w / 100, h / 100), dpi=100)
    for i in range(len(maps)):
        ax = fig.add_axes((i / n, 0, 1 / n, 1))
        ax.set_axis_off()
        ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
        m = maps[i] / maps[i].max() if maps[i].max() > 0 else maps[i]
        ax.imshow(m, extent=(0, w, h, 0), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        x1, y1, x2, y2 = np.asarray(actor_boxes[i]) * np.array([w, h, w, h])
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1.5))
        ax.text(2, 2, titles[i], color="black", fontsize=7, va="top", bbox={"facecolor": "white", "alpha": 0.7, "pad": 1})
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    _save(fig, plt, Path(path))


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


@dataclass
class VisualizeArgs:
    """Arguments of `visualize`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    out_dir: str = field(metadata={"help": "Output directory for the PNG files.", "option": "--out"})
    timestamp: float = field(metadata={"help": "Keyframe timestamp (AVA seconds)."})
    video: str = field(default="", metadata={"help": "Video file to take the frame from. Default: a blank canvas."})
    video_name: str = field(default="", metadata={
        "help": "AVA video id in the predictions/store. Default: the video file's stem."})
    time_offset: float = field(default=0.0, metadata={
        "help": "video time = timestamp - offset (900 for AVA's trimmed clips and the synthetic data)."})
    predictions: str = field(default="", metadata={
        "help": "AVA predictions CSV to draw (alternative to --run/--store)."})
    label_map: str = field(default="", metadata={
        "help": "Label map of --predictions. Default: the AVA 60-class list."})
    run_dir: str = field(default="", metadata={
        "help": "train-head run directory: predict the keyframe and draw attention.", "option": "--run"})
    store: str = field(default="", metadata={"help": "Feature store holding the keyframe (with --run)."})
    boxes: str = field(default="proposals", metadata={"help": "Actor boxes (with --run).", "choices": BOX_SETS})
    score_threshold: float = field(default=0.8, metadata={"help": "Minimum proposal score (with --run)."})
    top_k: int = field(default=3, metadata={"help": "Labels shown per actor."})
    min_score: float = field(default=0.05, metadata={"help": "Labels below this score are not shown."})
    actor: int = field(default=-1, metadata={
        "help": "Actor (index on the keyframe) whose STAGE attention is drawn; -1: all."})
    layer: int = field(default=-1, metadata={"help": "Layer / HR2O block whose attention is drawn (-1: the last)."})
    width: int = field(default=640, metadata={"help": "Blank canvas width."})
    height: int = field(default=360, metadata={"help": "Blank canvas height."})
    device: str = field(default="cpu", metadata={"help": "Device for the head (cpu, cuda, auto)."})

    def __post_init__(self):
        if bool(self.predictions) == bool(self.run_dir):
            raise ValueError("give either --predictions or --run (with --store)")
        if self.run_dir and not self.store:
            raise ValueError("--run needs --store")
        if not self.video and not self.video_name:
            raise ValueError("give --video or --video-name")
        if self.video and not Path(self.video).exists():
            raise ValueError(f"video {self.video} not found")
        check_box_set(self.boxes)
        if self.top_k < 1 or self.width < 16 or self.height < 16:
            raise ValueError("top_k must be >= 1 and the canvas at least 16x16")
        if not self.video_name:
            self.video_name = Path(self.video).stem


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
    x, rows = g.batch(hit, cfg["temporal_radius"])
    return head, cfg, store, x.to(device)


def run_visualize(args: VisualizeArgs) -> list[Path]:
    """Write the keyframe picture (and ACAR-Net heat maps) into out_dir; returns the files."""
    out = Path(args.out_dir)
    stem = f"{args.video_name}_{args.timestamp:.3f}".replace(".", "_")
    image = read_frame(args.video, args.timestamp - args.time_offset) if args.video else blank_canvas(args.width, args.height)
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
