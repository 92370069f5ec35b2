"""`train-head`: train one head on cached features; `predict`: run a trained head over a store.

The training loop is the one function `train`, meant to be read top to bottom. The schedule is
STAGE's (Sec. 4): Adam; LR divided by 10 when val mAP has not improved for `lr_patience` (10)
epochs; early stop after `early_stop` (5) epochs without improvement; an epoch cap. Note that with
the paper's numbers taken literally early stopping fires before the LR drop; both are flags.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from extract import ava_io
from extract.store import open_store
from heads import HEADS, build_head
from pipelines import losses
from pipelines.graph_data import BANK_MAPS, GraphData, build_graph_data, select_actors
from pipelines.evaluate import DEFAULT_LABEL_MAP, class_groups, frame_map

# Learning rates of the papers, for their reference features (SlowFast-like unless noted).
PAPER_LR: dict[str, float] = {
    "linear": 1e-3,  # our baseline; SlowFast's head is trained end-to-end, no paper value applies
    "stage": 1e-5,  # STAGE Sec. 4: 1e-5 for R101-I3D-NL / SlowFast-NL features (6.25e-5 for I3D)
}
DEFAULT_LR = 1e-4
LEVEL_OF_REQUIREMENT = {"roi": "actor_roi", "temporal": "actor_temporal", "context": "kf_context"}


@dataclass
class TrainArgs:
    train_store: str
    val_store: str
    head: str = "stage"
    out_dir: str = ""
    backbones: list[str] = field(default_factory=list)  # empty: the store's only backbone group
    combine: str = "mean"
    head_args: dict = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 6  # STAGE Sec. 4: batches of 6 clips
    lr: float | None = None  # None: the paper's value for the head (PAPER_LR)
    weight_decay: float = 0.0
    lr_patience: int = 10
    early_stop: int = 5
    loss: str = "bce"
    pose_ids: list[int] = field(default_factory=list)  # pose classes for loss=pose_softmax
    train_boxes: str = "gt"
    train_score_threshold: float = 0.9
    val_boxes: str = "proposals"
    val_score_threshold: float = 0.8
    eval_label_ids: list[int] = field(default_factory=list)  # empty: every class of the store
    max_dets_per_kf: int | None = 50
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    progress: bool = True
    command_line: str = ""
    bank_group: str = ""  # derived store group whose actor_maps feed a bank head (ACAR's ACFB, pipelines/acfb.py)

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid heads: {', '.join(sorted(HEADS))}")
        if self.loss not in losses.LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(losses.LOSSES)}")
        if self.combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', got {self.combine!r}")
        for name in ("train_boxes", "val_boxes"):
            if getattr(self, name) not in ("gt", "proposals", "gt+proposals"):
                raise ValueError(f"{name} must be gt, proposals or gt+proposals, got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.out_dir:
            self.out_dir = str(Path("runs") / f"{self.head}-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.lr is None:
            self.lr = PAPER_LR.get(self.head, DEFAULT_LR)
        if self.bank_group == "base":
            raise ValueError("bank_group cannot be 'base'; give the group written by write-bank (e.g. acfb)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def backbone_groups(store, wanted: list[str]) -> list[str]:
    """The feature groups to use: the requested ones, or the store's only one."""
    have = [g for g, attrs in store.groups.items() if g != "base" and "actor_pooled" in store.array_info(g)]
    if wanted:
        missing = [b for b in wanted if b not in have]
        if missing:
            raise ValueError(f"store {store.path} has no features for {missing}; it has: {have}")
        return wanted
    if len(have) != 1:
        raise ValueError(f"store {store.path} holds features of {have or 'no backbone'}; choose with --backbone")
    return have


def object_class_count(*paths: str) -> int:
    """Width of the one-hot object feature used when a store holds object boxes without detector
    features: the longest class list of the stores (train and val must agree on it)."""
    return max(len(open_store(p).attrs.get("object_classes") or []) for p in paths)


def load_split(path: str, args: TrainArgs, boxes: str, threshold: float, levels, device,
               num_object_classes: int = 0) -> tuple:
    """Open a store, load what the head needs, and filter actors. Returns (store, tables, GraphData)."""
    store = open_store(path)
    groups = backbone_groups(store, args.backbones)
    select = {"base": None}  # None: every array of the group
    for g in groups:
        select[g] = ["actor_pooled"] + [lv for lv in levels if lv in store.array_info(g)]
    if "tracks" in store.groups:
        select["tracks"] = ["actor_track"]
    if args.bank_group:
        if args.bank_group not in store.groups or "actor_maps" not in store.array_info(args.bank_group):
            raise ValueError(f"store {path} has no {args.bank_group}/actor_maps; write the bank first "
                             f"(write-bank --run <bank-free run> --store {path} --group {args.bank_group})")
        select[args.bank_group] = ["actor_maps"] + (
            ["actor_in_bank"] if "actor_in_bank" in store.array_info(args.bank_group) else [])
    tables = store.load(select)
    sel = select_actors(
        tables.data["base/actor_is_gt"].bool().numpy(),
        tables.data["base/actor_score"].float().numpy(),
        boxes=boxes,
        score_threshold=threshold,
    )
    data_device = device if _fits(tables, device) else torch.device("cpu")
    g = build_graph_data(
        tables,
        backbones=groups,
        combine=args.combine,
        select=sel,
        levels=frozenset(levels),
        track_array="tracks/actor_track" if "tracks" in store.groups else "base/actor_track",
        num_object_classes=num_object_classes,
        device=data_device,
    )
    if args.bank_group:
        attach_bank(g, tables, args.bank_group, sel, path)
    return store, tables, g


def attach_bank(g: GraphData, tables, group: str, sel: np.ndarray, path: str) -> None:
    """Put the stored relation maps of the selected actors into g.actor_extras["bank_maps"]; every
    batch then carries them with their keyframes (GraphData.batch adds "bank_kf")."""
    sel_t = torch.from_numpy(np.asarray(sel, dtype=bool))
    written = tables.data.get(f"{group}/actor_in_bank")
    if written is not None:
        missing = sel_t & ~written.bool()
        if missing.any():
            raise ValueError(f"store {path}: {int(missing.sum())} of the selected actors have no entry in "
                             f"{group}/actor_maps (it was written for other boxes or a lower score threshold); "
                             "rewrite the bank with write-bank --boxes gt+proposals and a threshold at most this run's")
    g.actor_extras[BANK_MAPS] = tables.data[f"{group}/actor_maps"][sel_t].to(g.device)  # (A, C, H, W)


def _fits(tables, device: torch.device) -> bool:
    """Keep the whole split on the GPU when it takes under 60% of the free memory."""
    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tables.data.values())
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.6 * free


def store_label_ids(store) -> list[int]:
    return [int(i) for i in store.attrs["label_ids"]]


def default_eval_ids(label_ids: list[int]) -> list[int]:
    """AVA trains on 80 classes and reports the 60 of the ActivityNet list; other maps: all classes."""
    ava60 = ava_io.read_label_map(DEFAULT_LABEL_MAP).ids
    if len(label_ids) == 80 and set(ava60) <= set(label_ids):
        return list(ava60)
    return list(label_ids)


def eval_groups(store, label_ids: list[int]) -> dict[str, list[int]]:
    """Class groups for grouped mAP: the store's own (synthetic data records them), else AVA's."""
    own = store.groups.get("base", {}).get("groups")
    if own:
        return {k: [int(i) for i in v if int(i) in label_ids] for k, v in own.items()}
    names = [str(n) for n in store.attrs.get("label_names", [])]
    try:
        return class_groups(ava_io.LabelMap(ids=list(label_ids), names=names))
    except (ValueError, KeyError):
        return {}


def gt_for_eval(tables, label_ids: list[int]) -> dict[str, np.ndarray]:
    """Flattened (keyframe, box, class id) rows of the ground-truth actors of a split."""
    is_gt = tables.data["base/actor_is_gt"].bool().numpy()
    labels = tables.data["base/actor_labels"].numpy()[is_gt]
    kf = tables.actor_kf.numpy()[is_gt]
    box = tables.data["base/actor_box"].float().numpy()[is_gt]
    r, c = np.nonzero(labels)
    return {"kf": kf[r], "box": box[r], "class": np.asarray(label_ids)[c]}


@torch.no_grad()
def run_head(head, g: GraphData, queries: torch.Tensor, radius: float, batch_size: int, device, amp: bool,
             progress: bool = False, desc: str = "predict", fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every actor of the query keyframes (or `fn(x)`, e.g. `head.first_order_maps`, in
    their place). Returns (rows into g, outputs (N, ...)) on CPU."""
    head.eval()
    fn = head if fn is None else fn
    rows_out, logits_out = [], []
    for start in tqdm(range(0, len(queries), batch_size), desc=desc, disable=not progress, leave=False):
        x, rows = g.batch(queries[start : start + batch_size], radius)
        x = x.to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = fn(x)
        rows_out.append(rows[x.is_query.to(rows.device)].cpu())
        logits_out.append(logits[x.is_query].float().cpu())
    return torch.cat(rows_out), torch.cat(logits_out)


def evaluate_head(head, g, tables, gt, args: TrainArgs, radius, device, label_ids, pose_cols, eval_ids):
    """Val frame-mAP of a head, plus the predictions (for the CSV)."""
    rows, logits = run_head(head, g, g.query_keyframes(), radius, max(args.batch_size, 64), device, args.amp)
    score = losses.scores(logits, args.loss, pose_cols.cpu()).numpy()  # (N, L)
    kf = g.actor_kf().cpu().numpy()[rows.numpy()]
    box = g.actor_box.cpu().numpy()[rows.numpy()]
    cols = [label_ids.index(i) for i in eval_ids]
    n = len(rows)
    det = {
        "kf": np.repeat(kf, len(cols)),
        "box": np.repeat(box, len(cols), axis=0),
        "class": np.tile(np.asarray(eval_ids), n),
        "score": score[:, cols].reshape(-1),
    }
    keep = np.isin(gt["class"], eval_ids)
    result = frame_map(
        gt["kf"][keep], gt["box"][keep], gt["class"][keep],
        det["kf"], det["box"], det["class"], det["score"],
        class_ids=eval_ids, max_dets_per_kf=args.max_dets_per_kf,
    )
    return result, det


def write_predictions_csv(path: Path, det: dict, tables) -> None:
    kf = det["kf"]
    videos = np.asarray(tables.video_names, dtype=object)[tables.kf_video.numpy()[kf]]
    ava_io.write_predictions(
        path,
        ava_io.Predictions(
            video=videos,
            timestamp=tables.kf_time.numpy()[kf],
            box=det["box"].astype(np.float32),
            action=det["class"].astype(np.int64),
            score=det["score"].astype(np.float32),
        ),
    )


def batch_loss(head, g: GraphData, labels: torch.Tensor, queries: torch.Tensor, radius: float, device,
               amp: bool, loss_fn, pose_cols: torch.Tensor, *, aux: bool = True, where: str = "") -> torch.Tensor:
    """The training loss of one batch of query keyframes (plus a head's auxiliary loss when `aux`);
    raises on a non-finite loss."""
    x, rows = g.batch(queries, radius)
    if aux and hasattr(head, "aux_loss"):
        x.extras["labels"] = labels[rows]  # IGMN's auxiliary losses are supervised per actor
    x = x.to(device)
    target = labels[rows[x.is_query.to(rows.device)]].to(device)
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        logits = head(x)
    loss = loss_fn(logits[x.is_query].float(), target, pose_cols.to(device))
    if aux and hasattr(head, "aux_loss"):
        loss = loss + head.aux_loss()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} at {where}")
    return loss


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args: TrainArgs) -> dict:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "last.pt").exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    device = resolve_device(args.device)
    seed_everything(args.seed)

    # Which store levels the head needs decides what is loaded.
    probe = build_head(args.head, actor_dim=8, object_dim=8, num_classes=2, **args.head_args)
    levels = [LEVEL_OF_REQUIREMENT[r] for r in sorted(probe.requires) if r in LEVEL_OF_REQUIREMENT]
    radius = float(probe.temporal_radius)
    if args.bank_group and not getattr(probe, "bank", False):
        raise ValueError(f"--bank-group {args.bank_group} needs a head built with a bank "
                         "(e.g. --head acar --head-arg bank=true)")
    if getattr(probe, "bank", False) and not args.bank_group:
        raise ValueError(f"head {args.head} with bank=True needs --bank-group (the group written by write-bank)")

    n_obj_cls = object_class_count(args.train_store, args.val_store)
    train_store, train_tables, train_g = load_split(
        args.train_store, args, args.train_boxes, args.train_score_threshold, levels, device, n_obj_cls)
    val_store, val_tables, val_g = load_split(
        args.val_store, args, args.val_boxes, args.val_score_threshold, levels, device, n_obj_cls)
    label_ids = store_label_ids(train_store)
    if store_label_ids(val_store) != label_ids:
        raise ValueError(f"train and val stores have different label maps: {args.train_store}, {args.val_store}")
    eval_ids = [i for i in (args.eval_label_ids or default_eval_ids(label_ids)) if i in label_ids]
    pose_cols = losses.pose_columns(label_ids, args.pose_ids)
    gt = gt_for_eval(val_tables, label_ids)
    groups = eval_groups(val_store, label_ids)
    if train_g.num_actors == 0 or val_g.num_actors == 0:
        raise ValueError(f"no actors selected (train: {train_g.num_actors}, val: {val_g.num_actors}); "
                         "check --train-boxes/--val-boxes and the score thresholds")

    head = build_head(
        args.head,
        actor_dim=train_g.actor_feat.shape[1],
        object_dim=train_g.object_feat.shape[1],
        num_classes=len(label_ids),
        **args.head_args,
    ).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=args.lr_patience)
    loss_fn = losses.get_loss(args.loss)
    state = {"epoch": 0, "best_map": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}

    if args.resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", map_location=device, weights_only=False)
        head.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        print(f"resuming {out} after epoch {state['epoch']}", file=sys.stderr)
    config = asdict(args) | {"lr": args.lr, "label_ids": label_ids, "eval_label_ids": eval_ids,
                             "actor_dim": train_g.actor_feat.shape[1], "object_dim": train_g.object_feat.shape[1],
                             "temporal_radius": radius, "levels": levels,
                             "num_object_classes": n_obj_cls}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # metrics.jsonl is rewritten from the checkpointed history so a resumed run never duplicates lines.
    (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in state["history"]))

    train_queries = train_g.query_keyframes()
    labels = train_g.actor_labels
    for epoch in range(state["epoch"], args.epochs):
        if state["bad_epochs"] >= args.early_stop:
            break
        head.train()
        order = train_queries[torch.randperm(len(train_queries), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch)).to(train_queries.device)]
        t0, seen, total_loss, steps = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not args.progress, unit="batch")
        for start in bar:
            q = order[start : start + args.batch_size]
            loss = batch_loss(head, train_g, labels, q, radius, device, args.amp, loss_fn, pose_cols,
                              where=f"epoch {epoch + 1}, step {steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item()
            steps += 1
            seen += len(q)
            bar.set_postfix(loss=f"{total_loss / steps:.4f}", kf_s=f"{seen / (time.perf_counter() - t0):.0f}")
        train_time = time.perf_counter() - t0

        result, det = evaluate_head(head, val_g, val_tables, gt, args, radius, device, label_ids, pose_cols, eval_ids)
        sched.step(result.map)
        improved = result.map > state["best_map"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        record = {"epoch": epoch + 1, "train_loss": total_loss / max(steps, 1), "val_map": result.map,
                  "lr": opt.param_groups[0]["lr"], "train_keyframes_per_s": seen / max(train_time, 1e-9),
                  "train_seconds": train_time}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {result.map * 100:.2f}"
              f"{'  (best)' if improved else ''}", file=sys.stderr)
        if improved:
            state["best_map"], state["best_epoch"] = result.map, epoch + 1
            _atomic_save({"model": head.state_dict(), "config": config, "epoch": epoch + 1}, out / "best.pt")
            write_predictions_csv(out / "val_predictions.csv", det, val_tables)
            (out / "per_class_ap.json").write_text(json.dumps(result.to_json(groups), indent=2))
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        _atomic_save({"model": head.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "state": state, "rng": rng, "config": config}, out / "last.pt")
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    summary = {"best_val_map": state["best_map"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
               "run_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_trained(run_dir: str | Path, device: torch.device, checkpoint: str = "best.pt"):
    """A trained head and its config from a run directory."""
    run = Path(run_dir)
    path = run / checkpoint
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run} a finished train-head run?")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    cfg = ckpt["config"]
    head = build_head(cfg["head"], actor_dim=cfg["actor_dim"], object_dim=cfg["object_dim"],
                      num_classes=len(cfg["label_ids"]), **cfg["head_args"]).to(device)
    head.load_state_dict(ckpt["model"])
    head.eval()
    return head, cfg


@dataclass
class PredictArgs:
    run_dir: str
    store: str
    out: str
    boxes: str = "proposals"
    score_threshold: float = 0.8
    checkpoint: str = "best.pt"
    device: str = "auto"
    batch_size: int = 64

    def __post_init__(self):
        if self.boxes not in ("gt", "proposals", "gt+proposals"):
            raise ValueError(f"boxes must be gt, proposals or gt+proposals, got {self.boxes!r}")


def load_run_split(run_dir, cfg: dict, path: str, boxes: str, threshold: float, device, *,
                   bank: bool = True) -> tuple:
    """A store loaded the way a trained run (its saved config `cfg`) reads it: its feature groups,
    levels, object classes and, with `bank`, its bank group. The store must have the run's label
    map. Returns (store, tables, GraphData) as `load_split`."""
    targs = TrainArgs(train_store=path, val_store=path, head=cfg["head"], out_dir=str(run_dir),
                      backbones=cfg["backbones"], combine=cfg["combine"], head_args=cfg["head_args"],
                      bank_group=cfg.get("bank_group", "") if bank else "", progress=False)
    store, tables, g = load_split(path, targs, boxes, threshold, cfg["levels"], device,
                                  cfg.get("num_object_classes", 0))
    if store_label_ids(store) != cfg["label_ids"]:
        raise ValueError(f"store {path} has another label map than the run {run_dir}")
    return store, tables, g


def predict(args: PredictArgs) -> Path:
    """A trained head over any store, to an AVA predictions CSV."""
    device = resolve_device(args.device)
    head, cfg = load_trained(args.run_dir, device, args.checkpoint)
    _, tables, g = load_run_split(args.run_dir, cfg, args.store, args.boxes, args.score_threshold, device)
    rows, logits = run_head(head, g, g.query_keyframes(), cfg["temporal_radius"], args.batch_size, device,
                            amp=True, progress=True)
    pose_cols = losses.pose_columns(cfg["label_ids"], cfg["pose_ids"])
    score = losses.scores(logits, cfg["loss"], pose_cols).numpy()
    ids = cfg["label_ids"]
    kf = g.actor_kf().cpu().numpy()[rows.numpy()]
    det = {"kf": np.repeat(kf, len(ids)), "box": np.repeat(g.actor_box.cpu().numpy()[rows.numpy()], len(ids), axis=0),
           "class": np.tile(np.asarray(ids), len(rows)), "score": score.reshape(-1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(out, det, tables)
    return out
