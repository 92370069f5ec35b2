"""A run's training curves as one PNG (`curves.png`), rewritten after every epoch from the
metrics.jsonl records: train loss, val mAP (the best epoch marked) and the learning rate (log
scale), one point per epoch. matplotlib's Agg backend: no display needed."""
from __future__ import annotations

from pathlib import Path

from stagecache.core.atomic import atomic_path

CURVES_FILE = "curves.png"


def plot_curves(path: str | Path, history: list[dict], *, title: str = "") -> None:
    """Write the curves of the epoch `history` (metrics.jsonl records) to `path` (atomically: a
    viewer never sees half a file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=100)
    panels = (("train_loss", "train loss", 1.0, "#1f77b4"), ("val_map", "val mAP (%)", 100.0, "#2a9d4b"),
              ("lr", "learning rate", 1.0, "#c0392b"))
    for ax, (key, label, scale, color) in zip(axes, panels):
        vals = [float(r[key]) * scale if r.get(key) is not None else float("nan") for r in history]
        ax.plot(epochs, vals, marker="o", markersize=3, color=color)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
    if any(r.get("lr") for r in history):
        axes[2].set_yscale("log")
    maps = [(r.get("val_map"), int(r["epoch"])) for r in history if r.get("val_map") is not None]
    if maps:
        best, at = max(maps, key=lambda m: (m[0], -m[1]))  # the first best epoch: best.pt's (a strict gain)
        axes[1].scatter([at], [best * 100], s=60, facecolors="none", edgecolors="black", zorder=3,
                        label=f"best {best * 100:.2f} (epoch {at})")
        axes[1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins: tight_layout would measure every label each epoch (a third of the drawing time)
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.15, top=0.84, wspace=0.28)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
