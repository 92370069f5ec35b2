"""JHMDB-21 / UCF101-24 evaluation: frame-mAP and video-mAP, the protocol of the ACT / MOC line.

Checked against MOC-Detector (`src/ACT.py`, `src/ACT_utils/ACT_utils.py`, `ACT_build.py`):
- Boxes in pixels, IoU with the +1 pixel convention (area = (x2 - x1 + 1) (y2 - y1 + 1)).
  Predictions (normalised boxes, as the store) are scaled back by the pickle's (height, width).
- AP: detections of a class sorted by score (descending; ties keep file order here: the
  reference's `np.argsort(-score)` is numpy's default quicksort, whose order among equal scores
  depends on the numpy version and the CPU since numpy 1.25 dispatches it to SIMD sorts
  (AVX-512 / AVX2, numpy/numpy#25610), so no fixed order reproduces it everywhere), each matched
  to the highest-IoU still unmatched GT of its frame (video) if that IoU >= the threshold;
  precision/recall starting from (p=1, r=0), AP = trapezoidal area under that curve.
  A class without detections has AP 0. mAP = mean over the classes that have GT in the split
  (the reference averages over all classes; every class has test GT in the real splits).
- frame-mAP: every annotated frame of the split's test videos (every box of every GT tube) is GT;
  each prediction row (box, class, score) is one detection, taken as given (ACT soft-NMSes its
  own overlapping per-frame detections at 0.6 while building them, before this step). IoU 0.5.
  Checked: on random cases this module gives the numbers of MOC-Detector's frameAP / BuildTubes /
  videoAP run on the same detections (frame-mAP, video-mAP at 0.2 / 0.5 / 0.75, linked tubes).
- Linking (ACT's `BuildTubes` with tubelet length K = 1, per video and class): at each keyframe the
  class's detections get one pass of soft NMS (IoU > 0.6: score * (1 - IoU)), the top 10 are kept;
  tubes, sorted by mean score, each take the best-scoring remaining detection whose IoU with the
  tube's last box is >= 0.5, else they end; left-over detections start new tubes. Tube score =
  mean of its detections' scores; tubes with score < 0.005 or shorter than 15 frames are dropped.
  No temporal trimming. Extension for stores with `--frame-stride` > 1: linking runs over the
  video's keyframes (frames that have predictions), and frames between two linked keyframes get
  linearly interpolated boxes.
- video-mAP: per video and class, NMS of tubes at spatio-temporal IoU 0.3; then AP as above with
  GT tubes. Spatio-temporal IoU = (temporal intersection / temporal union, in frames, of the two
  tubes' [first, last] spans) x mean per-frame IoU over the temporal intersection. Extension: a
  frame of the intersection where one tube has no box counts IoU 0 (the reference assumes tubes
  without gaps). Thresholds 0.2 / 0.5 / 0.75.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeGT, dataset_spec, read_tube_pickle, timestamp_frame
from stagecache.core.errors import UserError

VIDEO_IOUS = (0.2, 0.5, 0.75)


class TubeEvalError(UserError, ValueError):
    """Predictions that do not fit the GT pickle / split; the message names the file."""


def iou_px(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) pixel boxes with one box, +1 pixel convention."""
    w = np.maximum(0.0, np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1)
    h = np.maximum(0.0, np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1)
    inter = w * h
    area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # noqa: E731
    return inter / (area(boxes) + area(box) - inter)


def average_precision(is_tp: np.ndarray, n_gt: int) -> float:
    """Trapezoidal AP of detections already sorted by score (is_tp (N,) bool), from (r=0, p=1)."""
    if n_gt == 0:
        return float("nan")
    tp = np.cumsum(is_tp)
    fp = np.cumsum(~is_tp)
    prec = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    rec = np.concatenate([[0.0], tp / n_gt])
    return float(np.sum(np.diff(rec) * (prec[1:] + prec[:-1]) * 0.5))


def _match(order, keys, boxes, gt: dict, iou_fn, thr: float) -> np.ndarray:
    """Greedy matching of detections (in `order`) to the remaining GT of their key."""
    is_tp = np.zeros(len(order), bool)
    gt = {k: list(v) for k, v in gt.items()}
    for i, j in enumerate(order):
        cand = gt.get(keys[j])
        if not cand:
            continue
        ious = iou_fn(cand, boxes[j])
        best = int(np.argmax(ious))
        if ious[best] >= thr:
            is_tp[i] = True
            del cand[best]
    return is_tp


@dataclass
class FrameDets:
    """Per-frame detections, one row per (box, class): video, frame (1-based), label index, score, pixel box."""

    video: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    score: np.ndarray
    box: np.ndarray


def frame_ap(gt: TubeGT, videos: list[str], det: FrameDets, *, iou: float = 0.5) -> np.ndarray:
    """(n_classes,) frame AP; NaN for a class without GT in `videos`."""
    out = np.full(len(gt.labels), np.nan)
    keys = list(zip(det.video.tolist(), det.frame.tolist()))
    for c in range(len(gt.labels)):
        g: dict[tuple, list] = {}
        for v in videos:
            for label, t in gt.tubes[v]:
                if label == c:
                    for row in t:
                        g.setdefault((v, int(row[0])), []).append(row[1:5])
        n_gt = sum(len(b) for b in g.values())
        sel = np.flatnonzero(det.label == c)
        order = sel[np.argsort(-det.score[sel], kind="stable")]
        is_tp = _match(order, keys, det.box, g, lambda cand, b: iou_px(np.asarray(cand), b), iou)
        out[c] = average_precision(is_tp, n_gt) if n_gt else np.nan
    return out


def soft_nms(boxes: np.ndarray, scores: np.ndarray, thr: float = 0.6, top_k: int = 10):
    """One pass of ACT's tubelet soft NMS (K = 1): (boxes, rescored scores) of the top_k, best first."""
    weight = np.ones(len(scores))
    order = np.argsort(-scores, kind="stable")
    while order.size:
        i, rest = order[0], order[1:]
        ious = iou_px(boxes[rest], boxes[i])
        weight[rest[ious > thr]] = 1 - ious[ious > thr]
        order = rest[ious <= thr]
    s = scores * weight
    keep = np.argsort(-s, kind="stable")[:top_k]
    return boxes[keep], s[keep]


def link_tubes(frames: np.ndarray, boxes: list[np.ndarray], scores: list[np.ndarray], *, iou: float = 0.5,
               nms: float = 0.6, top_k: int = 10, min_score: float = 0.005, min_length: int = 15
               ) -> list[tuple[np.ndarray, float]]:
    """Link one class's detections of one video into tubes (see the module doc).

    frames (F,) increasing keyframe numbers; boxes[i] (n_i, 4) pixels and scores[i] (n_i,) at frames[i].
    Returns [(tube (L, 5): frame, x1, y1, x2, y2 for every frame of its span, score)]."""
    live: list[list] = []  # a tube: [(frame, box, score), ...]
    done: list[list] = []
    mean = lambda t: float(np.mean([s for _, _, s in t]))  # noqa: E731
    for i, f in enumerate(frames):
        b, s = soft_nms(np.asarray(boxes[i], np.float64).reshape(-1, 4), np.asarray(scores[i], np.float64),
                        nms, top_k)
        free = np.ones(len(s), bool)
        if live:
            live.sort(key=lambda t: -mean(t))
            ended = []
            for t in live:
                ious = iou_px(b, t[-1][1]) if len(b) else np.zeros(0)
                valid = np.flatnonzero(free & (ious >= iou))
                if valid.size:
                    j = int(valid[np.argmax(s[valid])])
                    t.append((int(f), b[j], float(s[j])))
                    free[j] = False
                else:
                    ended.append(t)
            for t in ended:
                live.remove(t)
                done.append(t)
        live.extend([(int(f), b[j], float(s[j]))] for j in np.flatnonzero(free))
    out = []
    for t in done + live:
        score = mean(t)
        f0, f1 = t[0][0], t[-1][0]
        if score < min_score or f1 - f0 + 1 < min_length:
            continue
        kf = np.array([x[0] for x in t], np.float64)
        kb = np.stack([x[1] for x in t])
        fr = np.arange(f0, f1 + 1, dtype=np.float64)
        tube = np.column_stack([fr] + [np.interp(fr, kf, kb[:, k]) for k in range(4)])
        out.append((tube, score))
    return out


def tube_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Spatio-temporal IoU of two tubes (L, 5) with increasing frame numbers (see the module doc)."""
    t0, t1 = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if t1 < t0:
        return 0.0
    t_iou = (t1 - t0 + 1) / (max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1)
    fa = {int(r[0]): r[1:5] for r in a if t0 <= r[0] <= t1}
    fb = {int(r[0]): r[1:5] for r in b if t0 <= r[0] <= t1}
    per = [float(iou_px(fa[f][None], fb[f])[0]) if f in fa and f in fb else 0.0
           for f in range(int(t0), int(t1) + 1)]
    return float(np.mean(per)) * t_iou


def nms_tubes(tubes: list[tuple[np.ndarray, float]], thr: float = 0.3) -> list[tuple[np.ndarray, float]]:
    """Greedy NMS by score: drop tubes whose spatio-temporal IoU with a kept one is > thr."""
    order = sorted(range(len(tubes)), key=lambda i: -tubes[i][1])
    kept: list[int] = []
    for i in order:
        if all(tube_iou(tubes[i][0], tubes[k][0]) <= thr for k in kept):
            kept.append(i)
    return [tubes[i] for i in kept]


def video_ap(gt: TubeGT, videos: list[str], tubes: dict[tuple[str, int], list[tuple[np.ndarray, float]]], *,
             iou: float) -> np.ndarray:
    """(n_classes,) video AP at spatio-temporal IoU `iou`; `tubes[(video, label)]` after NMS."""
    out = np.full(len(gt.labels), np.nan)
    for c in range(len(gt.labels)):
        g = {v: [t for label, t in gt.tubes[v] if label == c] for v in videos}
        g = {v: ts for v, ts in g.items() if ts}
        n_gt = sum(len(ts) for ts in g.values())
        dets = [(v, tube, s) for v in videos for tube, s in tubes.get((v, c), [])]
        order = np.argsort(-np.array([d[2] for d in dets], np.float64), kind="stable")
        keys = [d[0] for d in dets]
        boxes = [d[1] for d in dets]
        is_tp = _match(order, keys, boxes, g, lambda cand, t: np.array([tube_iou(x, t) for x in cand]), iou)
        out[c] = average_precision(is_tp, n_gt) if n_gt else np.nan
    return out


def frame_dets(gt: TubeGT, videos: list[str], pred: ava_io.Predictions, *, fps: float, source: str) -> FrameDets:
    """Predictions CSV rows (normalised boxes, timestamps) -> pixel boxes on frame numbers."""
    vids = np.asarray(pred.video).astype(str)
    unknown = sorted(set(vids.tolist()) - set(videos))
    if unknown:
        raise TubeEvalError(f"{source}: {len(unknown)} video(s) are not test videos of this split, e.g. "
                            f"{unknown[0]!r} (wrong --split or --gt?)")
    frame = timestamp_frame(pred.timestamp, fps)
    label = np.asarray(pred.action, np.int64) - 1
    if len(label) and (label.min() < 0 or label.max() >= len(gt.labels)):
        raise TubeEvalError(f"{source}: action ids must be 1..{len(gt.labels)} (the pickle's labels), "
                            f"got {int(label.min()) + 1}..{int(label.max()) + 1}")
    n = np.array([gt.nframes[v] for v in vids], np.int64)
    bad = np.flatnonzero((frame < 1) | (frame > n))
    if bad.size:
        i = int(bad[0])
        raise TubeEvalError(f"{source}: video {vids[i]} timestamp {pred.timestamp[i]} is frame {frame[i]}, "
                            f"outside 1..{n[i]} (fps {fps}: give extraction's --fps)")
    hw = np.array([gt.resolution[v] for v in vids], np.float64).reshape(-1, 2)
    scale = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], 1)
    return FrameDets(vids, frame, label, np.asarray(pred.score, np.float64), np.asarray(pred.box, np.float64) * scale)


def link_all(det: FrameDets, n_classes: int, **link_kw) -> dict[tuple[str, int], list[tuple[np.ndarray, float]]]:
    """Tubes per (video, class) after linking and NMS 0.3."""
    out = {}
    for v in np.unique(det.video):
        in_v = np.flatnonzero(det.video == v)
        frames = np.unique(det.frame[in_v])
        for c in range(n_classes):
            sel = in_v[det.label[in_v] == c]
            if not sel.size:
                continue
            per = [sel[det.frame[sel] == f] for f in frames]
            tubes = link_tubes(frames, [det.box[p] for p in per], [det.score[p] for p in per], **link_kw)
            out[(str(v), c)] = nms_tubes(tubes, 0.3)
    return out


@dataclass
class TubeEvalResult:
    labels: list[str]
    frame_ap: np.ndarray  # (n_classes,)
    video_ap: dict[float, np.ndarray] = field(default_factory=dict)

    @property
    def frame_map(self) -> float:
        return float(np.nanmean(self.frame_ap))

    def video_map(self, thr: float) -> float:
        return float(np.nanmean(self.video_ap[thr]))

    def to_json(self) -> dict:
        clean = lambda a: {n: (None if np.isnan(x) else float(x)) for n, x in zip(self.labels, a)}  # noqa: E731
        return {"frame_mAP": self.frame_map, "video_mAP": {str(t): self.video_map(t) for t in self.video_ap},
                "per_class_frame_AP": clean(self.frame_ap),
                "per_class_video_AP": {str(t): clean(a) for t, a in self.video_ap.items()}}


def evaluate_split(gt: TubeGT, split: int, pred: ava_io.Predictions, *, fps: float, source: str = "predictions",
                   iou: float = 0.5, video_ious=VIDEO_IOUS, min_tube_length: int = 15) -> TubeEvalResult:
    """Frame-mAP and video-mAP of one split's test predictions."""
    videos = gt.videos("test", split)
    det = frame_dets(gt, videos, pred, fps=fps, source=source)
    res = TubeEvalResult(list(gt.labels), frame_ap(gt, videos, det, iou=iou))
    tubes = link_all(det, len(gt.labels), min_length=min_tube_length)
    for t in video_ious:
        res.video_ap[float(t)] = video_ap(gt, videos, tubes, iou=float(t))
    return res


@dataclass
class TubeEvalArgs:
    """`evaluate --dataset jhmdb|ucf24`: one predictions CSV per split (JHMDB: usually 1, 2, 3)."""

    dataset: str
    gt: str
    preds: list[str]
    splits: list[int]
    fps: float | None = None  # None: the dataset's (jhmdb 30, ucf24 25), as extraction
    iou: float = 0.5
    video_ious: tuple[float, ...] = VIDEO_IOUS
    min_tube_length: int = 15
    json_path: str | None = None

    def __post_init__(self):
        spec = dataset_spec(self.dataset)
        self.preds, self.splits = list(self.preds), [int(s) for s in self.splits] or [1]
        if len(self.preds) != len(self.splits):
            raise ValueError(f"{len(self.preds)} --pred file(s) for {len(self.splits)} --split value(s): give one "
                             "split per predictions file, in the same order")
        if any(not 1 <= s <= spec.splits for s in self.splits):
            raise ValueError(f"{self.dataset} has splits 1..{spec.splits}, got {self.splits}")
        if not 0 < self.iou <= 1 or any(not 0 < t <= 1 for t in self.video_ious) or self.min_tube_length < 1:
            raise ValueError("IoU thresholds must be in (0, 1] and min_tube_length >= 1")
        if self.fps is None:
            self.fps = spec.fps


def run_tube_eval(args: TubeEvalArgs, echo=print) -> dict:
    gt = read_tube_pickle(args.gt)
    runs = []
    for path, split in zip(args.preds, args.splits):
        r = evaluate_split(gt, split, ava_io.read_predictions(path), fps=args.fps, source=path, iou=args.iou,
                           video_ious=args.video_ious, min_tube_length=args.min_tube_length)
        runs.append({"split": split, "pred": path, **r.to_json()})
        echo(f"split {split} ({path}): frame-mAP@{args.iou:g} {r.frame_map * 100:.2f}  " + "  ".join(
            f"video-mAP@{t:g} {r.video_map(t) * 100:.2f}" for t in r.video_ap))
    mean = {"frame_mAP": float(np.mean([r["frame_mAP"] for r in runs])),
            "video_mAP": {str(t): float(np.mean([r["video_mAP"][str(float(t))] for r in runs]))
                          for t in args.video_ious}}
    if len(runs) > 1:
        echo(f"mean over splits {args.splits}: frame-mAP {mean['frame_mAP'] * 100:.2f}  " + "  ".join(
            f"video-mAP@{t} {m * 100:.2f}" for t, m in mean["video_mAP"].items()))
    out = {"dataset": args.dataset, "gt": args.gt, "runs": runs, "mean": mean}
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(args.json_path) as f:  # a kill mid-write leaves the previous file whole
            f.write(json.dumps(out, indent=2) + "\n")
    return out
