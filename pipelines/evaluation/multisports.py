"""MultiSports evaluation, `evaluate --dataset multisports` (docs/EVALUATION.md, "MultiSports"):
frame-mAP at IoU 0.5 and video-mAP at 0.2, 0.5 and averaged over 0.1:0.1:0.9, as MCG-NJU/MultiSports'
`evaluate_multisports.py` computes them (`multisports_ops`), on tubes linked from the frame
predictions as MMAction2's `MultisportsMetric` links them (`multisports_link`).

Detections: every predictions CSV row (box, class, score) is one frame detection, boxes scaled to
the pickle's pixels (`tubes_frame.frame_dets`); no per-frame NMS before frame-AP (MultiSports scores
the detections as given). MMAction2's metric keeps one row per box, its arg-max class: write such a
CSV to reproduce its numbers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract import ava_io
from stagecache.extract.datasets.multisports import FPS, evaluated_labels, read_multisports_gt
from stagecache.extract.datasets.tubes_pkl import TubeGT
from stagecache.pipelines.evaluation.multisports_link import MIN_LENGTH, link_all
from stagecache.pipelines.evaluation.multisports_ops import TubeGapError, frame_ap_class, video_ap_class
from stagecache.pipelines.evaluation.tubes import class_table
from stagecache.pipelines.evaluation.tubes_frame import FrameDets, TubeEvalError, frame_dets, frame_gt

VIDEO_IOUS = (0.2, 0.5)
VIDEO_IOUS_ALL = tuple(0.1 + 0.1 * i for i in range(9))  # videoAP_all's 0.10:0.90, written as it writes them
__all__ = ["MultiSportsEvalArgs", "MultiSportsResult", "evaluate_multisports", "run_multisports_eval",
           "frame_ap", "video_ap"]


@dataclass
class MultiSportsResult:
    labels: list[str]
    frame_ap: np.ndarray  # (n_classes,), NaN: not evaluated (NOT_EVALUATED or no GT)
    video_ap: dict[float, np.ndarray] = field(default_factory=dict)
    video_ap_all: np.ndarray | None = None  # per class, mean over VIDEO_IOUS_ALL

    @staticmethod
    def _mean(a: np.ndarray) -> float:
        a = a[~np.isnan(a)]
        return float(np.mean(a)) if len(a) else float("nan")

    @property
    def frame_map(self) -> float:
        return self._mean(self.frame_ap)

    def video_map(self, thr: float) -> float:
        return self._mean(self.video_ap[thr])

    @property
    def video_map_all(self) -> float:
        return self._mean(self.video_ap_all)

    def to_json(self) -> dict:
        clean = lambda a: {n: (None if np.isnan(x) else float(x)) for n, x in zip(self.labels, a)}  # noqa: E731
        out = {"frame_mAP": self.frame_map, "video_mAP": {str(t): self.video_map(t) for t in self.video_ap},
               "per_class_frame_AP": clean(self.frame_ap),
               "per_class_video_AP": {str(t): clean(a) for t, a in self.video_ap.items()}}
        if self.video_ap_all is not None:
            out["video_mAP"]["0.1:0.9"] = self.video_map_all
            out["per_class_video_AP"]["0.1:0.9"] = clean(self.video_ap_all)
        return out


def frame_ap(gt: TubeGT, videos: list[str], det: FrameDets, *, iou: float = 0.5, frame_stride: int = 1) -> np.ndarray:
    """(n_classes,) frame AP; NaN for a class the reference skips or one without GT."""
    out = np.full(len(gt.labels), np.nan)
    key = np.stack([det.vidx, det.frame], 1)
    score, box = det.score.astype(np.float64), det.box.astype(np.float64)
    for c in np.flatnonzero(evaluated_labels(gt.labels)):
        g = frame_gt(gt, videos, int(c), frame_stride)  # float64 boxes in tube order, as the reference lists them
        n_gt = sum(len(b) for b in g.values())
        if n_gt:
            sel = np.flatnonzero(det.label == c)
            out[c] = frame_ap_class(g, n_gt, key[sel], score[sel], box[sel], iou)
    return out


def video_ap(gt: TubeGT, videos: list[str], tubes: dict[int, list], *, iou: float) -> np.ndarray:
    """(n_classes,) video AP at spatio-temporal IoU `iou` of `link_all`'s tubes; NaN as frame_ap."""
    out = np.full(len(gt.labels), np.nan)
    for c in np.flatnonzero(evaluated_labels(gt.labels)):
        g = {v: [t for label, t in gt.tubes[v] if label == c] for v in videos}
        g = {v: ts for v, ts in g.items() if ts}
        if g:
            try:
                out[c] = video_ap_class(g, tubes.get(int(c), []), iou)
            except TubeGapError as e:
                raise TubeEvalError(f"{gt.path}: {e}") from None
    return out


def evaluate_multisports(gt: TubeGT, pred: ava_io.Predictions, *, fps: float = FPS, source: str = "predictions",
                         iou: float = 0.5, video_ious=VIDEO_IOUS, all_ious: bool = True, frame_stride: int = 1,
                         min_tube_length: int = MIN_LENGTH) -> MultiSportsResult:
    """Frame-AP and video-AP of the test videos' predictions."""
    videos = gt.videos("test", 1)
    det = frame_dets(gt, videos, pred, fps=fps, source=source, frame_stride=frame_stride)
    res = MultiSportsResult(list(gt.labels), frame_ap(gt, videos, det, iou=iou, frame_stride=frame_stride))
    tubes = link_all(det, gt.nframes, videos, len(gt.labels), stride=frame_stride, min_length=min_tube_length)
    for t in video_ious:
        res.video_ap[float(t)] = video_ap(gt, videos, tubes, iou=float(t))
    if all_ious:
        res.video_ap_all = np.mean([video_ap(gt, videos, tubes, iou=t) for t in VIDEO_IOUS_ALL], axis=0)
    return res


@dataclass
class MultiSportsEvalArgs:
    """`evaluate --dataset multisports`: one predictions CSV of the test videos."""

    gt: str
    pred: str
    fps: float | None = None  # None: 25, as extraction
    iou: float = 0.5
    video_ious: tuple[float, ...] = VIDEO_IOUS
    min_tube_length: int | None = None  # None: 15, MMAction2's tube_thr
    frame_stride: int = 1
    json_path: str | None = None

    def __post_init__(self):
        self.video_ious = tuple(float(t) for t in self.video_ious)
        self.fps = FPS if self.fps is None else float(self.fps)
        self.min_tube_length = MIN_LENGTH if self.min_tube_length is None else int(self.min_tube_length)
        if not 0 < self.iou <= 1 or any(not 0 < t <= 1 for t in self.video_ious):
            raise ValueError("IoU thresholds must be in (0, 1]")
        if self.min_tube_length < 1 or self.frame_stride < 1:
            raise ValueError("min_tube_length and frame_stride must be >= 1")


def _class_table(res: MultiSportsResult, echo) -> None:
    cols = [("frame", res.frame_ap)] + [(f"v@{t:g}", a) for t, a in res.video_ap.items()]
    if res.video_ap_all is not None:
        cols.append(("v@.1:.9", res.video_ap_all))
    class_table(res.labels, cols, echo)


def run_multisports_eval(args: MultiSportsEvalArgs, echo=print) -> dict:
    gt = read_multisports_gt(args.gt)
    r = evaluate_multisports(gt, ava_io.read_predictions(args.pred), fps=args.fps, source=args.pred, iou=args.iou,
                             video_ious=args.video_ious, frame_stride=args.frame_stride,
                             min_tube_length=args.min_tube_length)
    echo(f"MultiSports ({args.pred}), per-class AP (%; n/a: not evaluated or no GT):")
    _class_table(r, echo)
    echo(f"frame-mAP@{args.iou:g} {r.frame_map * 100:.2f}  " + "  ".join(
        f"video-mAP@{t:g} {r.video_map(t) * 100:.2f}" for t in r.video_ap)
        + f"  video-mAP@0.1:0.9 {r.video_map_all * 100:.2f}")
    out = {"dataset": "multisports", "gt": args.gt, "pred": args.pred, "frame_stride": args.frame_stride,
           **r.to_json()}
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(args.json_path) as f:  # a kill mid-write leaves the previous file whole
            f.write(json.dumps(out, indent=2) + "\n")
    return out
