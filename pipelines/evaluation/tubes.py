"""JHMDB-21 / UCF101-24 evaluation: frame-mAP and video-mAP as the ACT / MOC evaluation code
computes them, `evaluate --dataset jhmdb|ucf24` (docs/EVALUATION.md, "JHMDB-21 / UCF101-24").

The steps, each as the reference does it (protocol constants in `tubes_link.TUBE_PROTOCOLS`):
- frame-AP (`tubes_frame`): predictions CSV rows to pixel boxes (the pickle's resolution) on frame
  numbers; per frame and class the protocol's NMS (MOC: soft, rescoring at IoU > 0.6; ACT: hard at
  0.3); then per class, detections ranked by score, each matched to the highest-IoU remaining GT
  box of its frame (+1 pixel IoU >= 0.5); AP = trapezoids of float32 precision / recall from
  (p=1, r=0). GT: every annotated frame of the split's test videos (at a keyframe stride s, those
  on the keyframe grid 1, 1 + s, ...: the frames that are predicted).
- linking (`tubes_link`): per video and class, frame by frame (every frame, or every keyframe at a
  stride), the protocol's NMS and top 10; tubes in mean-score order each take the best-scoring
  detection overlapping their last box, else end (MOC: at once; ACT: 5 frames after their last box);
  tube score = mean detection score; short (< 15 frames) and low-scoring tubes dropped.
- video-AP: tube NMS at spatio-temporal IoU 0.3 per video and class, then AP as above with GT tubes;
  at each threshold of `--video-iou` and as MOC's mean over 0.5:0.05:0.95.
mAP = mean over the classes that have GT in the split (the reference averages over every label;
every class has test GT in the real splits).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeGT, check_dataset, dataset_spec, read_tube_pickle
from stagecache.pipelines.evaluation.tubes_frame import TubeEvalError, frame_ap, frame_dets, frame_nms
from stagecache.pipelines.evaluation.tubes_link import (DEFAULT_TUBE_PROTOCOL, TUBE_PROTOCOLS, VIDEO_IOUS_050_095,
                                                        link_all, video_ap)

VIDEO_IOUS = (0.2, 0.5, 0.75)
TUBES_FORMAT = "stagecache-tubes/1"
__all__ = ["TubeEvalArgs", "TubeEvalError", "TubeEvalResult", "evaluate_split", "run_tube_eval", "VIDEO_IOUS",
           "TUBE_PROTOCOLS", "DEFAULT_TUBE_PROTOCOL", "tube_frame_map"]


@dataclass
class TubeEvalResult:
    labels: list[str]
    frame_ap: np.ndarray  # (n_classes,), NaN: no GT
    video_ap: dict[float, np.ndarray] = field(default_factory=dict)
    video_ap_050_095: np.ndarray | None = None  # per class, mean of the ten thresholds
    tubes: dict = field(default_factory=dict)  # (video, label index) -> [(tube (L, 6), score)] after the tube NMS

    @property
    def frame_map(self) -> float:
        return float(np.nanmean(self.frame_ap))

    def video_map(self, thr: float) -> float:
        return float(np.nanmean(self.video_ap[thr]))

    @property
    def video_map_050_095(self) -> float:
        return float(np.nanmean(self.video_ap_050_095))

    def to_json(self) -> dict:
        clean = lambda a: {n: (None if np.isnan(x) else float(x)) for n, x in zip(self.labels, a)}  # noqa: E731
        out = {"frame_mAP": self.frame_map, "video_mAP": {str(t): self.video_map(t) for t in self.video_ap},
               "per_class_frame_AP": clean(self.frame_ap),
               "per_class_video_AP": {str(t): clean(a) for t, a in self.video_ap.items()}}
        if self.video_ap_050_095 is not None:
            out["video_mAP"]["0.5:0.95"] = self.video_map_050_095
            out["per_class_video_AP"]["0.5:0.95"] = clean(self.video_ap_050_095)
        return out


def tube_frame_map(gt: TubeGT, split: int, pred: ava_io.Predictions, *, fps: float, source: str = "predictions",
                   protocol: str = DEFAULT_TUBE_PROTOCOL, iou: float = 0.5, frame_stride: int = 1) -> np.ndarray:
    """Per-class frame AP alone (what `train-head` reports on a tube dataset's val store)."""
    p = TUBE_PROTOCOLS[protocol]
    videos = gt.videos("test", split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # videos without rows: scored as such, said by `evaluate`
        det = frame_dets(gt, videos, pred, fps=fps, source=source, frame_stride=frame_stride)
    return frame_ap(gt, videos, frame_nms(det, p.frame_nms, p.frame_nms_iou), iou=iou, frame_stride=frame_stride)


def evaluate_split(gt: TubeGT, split: int, pred: ava_io.Predictions, *, fps: float, source: str = "predictions",
                   protocol: str = DEFAULT_TUBE_PROTOCOL, iou: float = 0.5, video_ious=VIDEO_IOUS,
                   min_tube_length: int | None = None, frame_stride: int = 1, all_050_095: bool = True
                   ) -> TubeEvalResult:
    """Frame-mAP and video-mAP of one split's test predictions."""
    p = TUBE_PROTOCOLS[protocol]
    videos = gt.videos("test", split)
    det = frame_dets(gt, videos, pred, fps=fps, source=source, frame_stride=frame_stride)
    res = TubeEvalResult(list(gt.labels), frame_ap(gt, videos, frame_nms(det, p.frame_nms, p.frame_nms_iou), iou=iou,
                                                   frame_stride=frame_stride))
    res.tubes = link_all(det, gt, videos, p, stride=frame_stride, min_length=min_tube_length)
    for t in video_ious:
        res.video_ap[float(t)] = video_ap(gt, videos, res.tubes, iou=float(t))
    if all_050_095:
        per = [res.video_ap[t] if t in res.video_ap else video_ap(gt, videos, res.tubes, iou=t)
               for t in VIDEO_IOUS_050_095]
        res.video_ap_050_095 = np.mean(per, axis=0)
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
    min_tube_length: int | None = None  # None: the protocol's (15)
    json_path: str | None = None
    protocol: str | None = None  # None: DEFAULT_TUBE_PROTOCOL
    frame_stride: int = 1
    tubes_out: str | None = None

    def __post_init__(self):
        spec = dataset_spec(self.dataset)
        self.preds, self.splits = list(self.preds), [int(s) for s in self.splits] or [1]
        self.video_ious = tuple(float(t) for t in self.video_ious)
        if len(self.preds) != len(self.splits):
            raise ValueError(f"{len(self.preds)} --pred file(s) for {len(self.splits)} --split value(s): give one "
                             "split per predictions file, in the same order")
        if any(not 1 <= s <= spec.splits for s in self.splits):
            raise ValueError(f"{self.dataset} has splits 1..{spec.splits}, got {self.splits}")
        if not 0 < self.iou <= 1 or any(not 0 < t <= 1 for t in self.video_ious):
            raise ValueError("IoU thresholds must be in (0, 1]")
        if self.min_tube_length is not None and self.min_tube_length < 1:
            raise ValueError("min_tube_length must be >= 1")
        if self.frame_stride < 1:
            raise ValueError("frame_stride must be >= 1")
        self.protocol = self.protocol or DEFAULT_TUBE_PROTOCOL
        if self.protocol not in TUBE_PROTOCOLS:
            raise ValueError(f"--protocol for {self.dataset}: one of {', '.join(TUBE_PROTOCOLS)}, "
                             f"got {self.protocol!r}")
        if self.fps is None:
            self.fps = spec.fps
        elif self.fps != spec.fps:
            warnings.warn(f"--fps {self.fps:g} assumed for {self.dataset} (its frames are {spec.fps:g} fps): "
                          "timestamps are turned into frames with it", stacklevel=2)


def _tubes_json(res: TubeEvalResult, split: int, path: str) -> dict:
    tubes = [{"video": v, "label": int(c), "label_name": res.labels[c], "score": float(s), "rank": r,
              "boxes": [[None if np.isnan(x) else float(x) for x in row] for row in t]}  # NaN: an ACT gap frame
             for (v, c), ts in res.tubes.items() for r, (t, s) in enumerate(ts)]
    return {"split": split, "pred": path, "tubes": tubes}


def class_table(labels: list[str], cols: list[tuple[str, np.ndarray]], echo) -> None:
    """Per-class AP table: a row per class, a column per (name, (n_classes,) AP) of `cols`."""
    width = max(12, *(len(n) for n in labels))
    echo(f"  {'class':{width}s} " + " ".join(f"{n:>8s}" for n, _ in cols))
    for i, name in enumerate(labels):
        echo(f"  {name:{width}s} " + " ".join("     n/a" if np.isnan(a[i]) else f"{a[i] * 100:8.2f}" for _, a in cols))


def _class_table(res: TubeEvalResult, echo) -> None:
    cols = [("frame", res.frame_ap)] + [(f"v@{t:g}", a) for t, a in res.video_ap.items()]
    if res.video_ap_050_095 is not None:
        cols.append(("v@.5:.95", res.video_ap_050_095))
    class_table(res.labels, cols, echo)


def run_tube_eval(args: TubeEvalArgs, echo=print) -> dict:
    gt = read_tube_pickle(args.gt)
    check_dataset(gt, args.dataset)
    runs, all_tubes = [], []
    for path, split in zip(args.preds, args.splits):
        r = evaluate_split(gt, split, ava_io.read_predictions(path), fps=args.fps, source=path, iou=args.iou,
                           video_ious=args.video_ious, min_tube_length=args.min_tube_length,
                           protocol=args.protocol, frame_stride=args.frame_stride)
        runs.append({"split": split, "pred": path, **r.to_json()})
        echo(f"split {split} ({path}), protocol {args.protocol}, per-class AP (%):")
        _class_table(r, echo)
        echo(f"split {split}: frame-mAP@{args.iou:g} {r.frame_map * 100:.2f}  " + "  ".join(
            f"video-mAP@{t:g} {r.video_map(t) * 100:.2f}" for t in r.video_ap)
            + f"  video-mAP@0.5:0.95 {r.video_map_050_095 * 100:.2f}")
        if args.tubes_out:
            all_tubes.append(_tubes_json(r, split, path))
    keys = [str(float(t)) for t in args.video_ious] + ["0.5:0.95"]
    mean = {"frame_mAP": float(np.mean([r["frame_mAP"] for r in runs])),
            "video_mAP": {k: float(np.mean([r["video_mAP"][k] for r in runs])) for k in keys}}
    if len(runs) > 1:
        echo(f"mean over splits {args.splits}: frame-mAP {mean['frame_mAP'] * 100:.2f}  " + "  ".join(
            f"video-mAP@{t} {m * 100:.2f}" for t, m in mean["video_mAP"].items()))
    out = {"dataset": args.dataset, "gt": args.gt, "protocol": args.protocol, "frame_stride": args.frame_stride,
           "runs": runs, "mean": mean}
    for path, doc in ((args.json_path, out), (args.tubes_out, {
            "format": TUBES_FORMAT, "dataset": args.dataset, "gt": args.gt, "protocol": args.protocol,
            "frame_stride": args.frame_stride, "labels": list(gt.labels), "runs": all_tubes})):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path) as f:  # a kill mid-write leaves the previous file whole
                f.write(json.dumps(doc, indent=2 if doc is out else None) + "\n")
    return out
