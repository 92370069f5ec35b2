"""`visualize`'s pictures (pipelines/tools/visualize.py draws through these): a keyframe with its
boxes, labels and attention lines, and ACAR-Net heat-map panels. Frames narrower than `MIN_WIDTH`
are enlarged by an integer factor (nearest neighbour) so that labels can be read; labels are placed
beside their box where they cover no actor or object box; matplotlib's Agg backend, no
time-dependent metadata: the same inputs give the same bytes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#469990", "#9a6324"]


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


MIN_WIDTH = 640  # pictures narrower than this are enlarged: a 160 px frame's labels cannot be read


def display_image(image: np.ndarray, min_width: int = MIN_WIDTH) -> np.ndarray:
    """The frame as drawn: enlarged by the smallest integer factor that makes it at least `min_width`
    wide (nearest neighbour, so pixels stay pixels and the same frame gives the same bytes)."""
    k = -(-min_width // image.shape[1]) if image.shape[1] < min_width else 1
    return image if k == 1 else np.repeat(np.repeat(image, k, axis=0), k, axis=1)


def _font_size(width: int) -> float:
    """Points for labels at this picture width: 8 at 640 px, growing with the picture, at most 16."""
    return float(min(16.0, 8.0 * max(1.0, width / MIN_WIDTH)))


def _overlap(a, b) -> float:
    """Area of the intersection of two (x1, y1, x2, y2) rectangles."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _place_label(box, size, blocked: list, w: int, h: int) -> tuple[float, float, float, float]:
    """Where a label of `size` (tw, th) px goes for the box (x1, y1, x2, y2) px: the first of above,
    below, right, left of the box (either edge) that stays in the picture and covers no box and no
    label placed before; else the one covering least. Deterministic."""
    x1, y1, x2, y2 = box
    tw, th = size
    cands = [(x1, y1 - th), (x1, y2), (x2 - tw, y1 - th), (x2 - tw, y2), (x2, y1), (x1 - tw, y1),
             (x2, y2 - th), (x1 - tw, y2 - th), (x1, y1)]
    best, best_cost = None, None
    for cx, cy in cands:
        cx, cy = float(np.clip(cx, 0, max(w - tw, 0))), float(np.clip(cy, 0, max(h - th, 0)))
        rect = (cx, cy, cx + tw, cy + th)
        cost = sum(_overlap(rect, b) for b in blocked)
        if cost == 0:
            return rect
        if best_cost is None or cost < best_cost:
            best, best_cost = rect, cost
    return best


def draw_keyframe(path: str | Path, image: np.ndarray, actor_boxes: np.ndarray, labels: list[list[tuple[str, float]]],
                  *, object_boxes: np.ndarray | None = None, object_names: list[str] | None = None,
                  edges: list[Edge] = (), title: str = "") -> list[Edge]:
    """A keyframe with actor boxes and their labels, objects (dashed) and attention lines.

    Boxes are normalised x1y1x2y2; `labels[i]` is actor i's [(name, score)] list; an edge's nodes
    index actors then objects; line width and opacity grow with the weight, its weight written on a
    dark patch. The frame is enlarged to at least `MIN_WIDTH` px (`display_image`); labels sit
    beside their box where they cover no box (`_place_label`). Writes a PNG of the enlarged frame's
    size; returns the edges drawn."""
    import matplotlib.patches as patches
    import matplotlib.patheffects as pe

    image = display_image(image)
    h, w = image.shape[:2]
    fs = _font_size(w)
    fig, ax, plt = _figure(w, h)
    renderer = fig.canvas.get_renderer()
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    objects = np.zeros((0, 4)) if object_boxes is None else np.asarray(object_boxes, dtype=np.float64).reshape(-1, 4)
    actors = np.asarray(actor_boxes, dtype=np.float64).reshape(-1, 4)
    nodes = np.concatenate([actors, objects])
    scale = np.array([w, h, w, h])
    outline = [pe.withStroke(linewidth=2.5, foreground="black")]

    def text_size(text: str, size: float) -> tuple[float, float]:
        t = ax.text(0, 0, text, fontsize=size, bbox={"pad": 1.5, "linewidth": 0})
        ext = t.get_window_extent(renderer=renderer)
        t.remove()
        return ext.width + 2, ext.height + 2

    drawn = []
    wmax = max([e.weight for e in edges], default=1.0) or 1.0
    for e in edges:
        (x0, y0), (x1, y1) = _centre(nodes[e.src] * scale), _centre(nodes[e.dst] * scale)
        a = float(np.clip(e.weight / wmax, 0.3, 1.0))
        ax.plot([x0, x1], [y0, y1], color="yellow", linewidth=1.0 + 4.0 * a, alpha=a, solid_capstyle="round",
                path_effects=[pe.withStroke(linewidth=2.0 + 4.0 * a, foreground="black", alpha=a)])
        drawn.append(e)
    blocked = [tuple(b * scale) for b in nodes]  # labels go where they cover no box
    for j, b in enumerate(objects):
        x1, y1, x2, y2 = b * scale
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white",
                                       linestyle="--", linewidth=1.5, path_effects=outline))
    for i, b in enumerate(actors):
        c = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = b * scale
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c, linewidth=2.0))
        text = "\n".join(f"{n} {s:.2f}" for n, s in labels[i]) if i < len(labels) else ""
        if text:
            rect = _place_label((x1, y1, x2, y2), text_size(text, fs), blocked, w, h)
            blocked.append(rect)
            ax.text(rect[0] + 1, rect[1] + 1, text, color="white", fontsize=fs, va="top", ha="left",
                    bbox={"facecolor": c, "alpha": 0.85, "pad": 1.5, "linewidth": 0})
    for j, b in enumerate(objects if object_names is not None else ()):
        rect = _place_label(tuple(b * scale), text_size(object_names[j], fs * 0.85), blocked, w, h)
        blocked.append(rect)
        ax.text(rect[0] + 1, rect[1] + 1, object_names[j], color="white", fontsize=fs * 0.85, va="top", ha="left",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0})
    # Weights on a dark patch along their line, where they cover no label and no other weight (boxes
    # they may cross); a weight with no free spot is left to its line's width and opacity.
    labels_placed = blocked[len(nodes):]
    for e in drawn:
        (x0, y0), (x1, y1) = _centre(nodes[e.src] * scale), _centre(nodes[e.dst] * scale)
        text = f"{e.weight:.2f}"
        tw, th = text_size(text, fs * 0.85)
        for f in (0.5, 0.35, 0.65, 0.2, 0.8):
            cx, cy = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
            rect = (cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2)
            if all(_overlap(rect, b) == 0 for b in labels_placed):
                labels_placed.append(rect)
                ax.text(cx, cy, text, color="yellow", fontsize=fs * 0.85, ha="center", va="center", fontweight="bold",
                        bbox={"facecolor": "black", "alpha": 0.75, "pad": 1, "linewidth": 0})
                break
    if title:
        ax.text(w - 3, h - 3, title, color="black", fontsize=fs, va="bottom", ha="right",
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 1.5, "linewidth": 0})
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

    image = display_image(image)  # as draw_keyframe: readable titles on small frames
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
        ax.text(3, 3, titles[i], color="black", fontsize=_font_size(w), va="top",
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 1.5, "linewidth": 0})
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    _save(fig, plt, Path(path))
