"""JHMDB-21 / UCF101-24 tubes: the frame-by-frame linking of ACT / MOC (`BuildTubes`), the tube NMS
and video-AP (docs/EVALUATION.md has each step and where the two protocols differ).

At a keyframe stride s the linking is the reference's with tubelets of length K = s: the walk
visits the keyframes 1, 1 + s, ... (every one, with or without rows), a keyframe's detection is a
tubelet holding its box over its s frames (the last one stops at the video's end), a tube's
extent is [its first keyframe, its last keyframe + s - 1], and "frames since the last match" are
counted in frames. At s = 1 this is the reference itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stagecache.extract.datasets.tubes_pkl import TubeGT
from stagecache.pipelines.evaluation.tubes_frame import FrameDets
from stagecache.pipelines.evaluation.tubes_ops import iou2d, iou3dt, link_candidates, nms_tubes, pr_to_ap


@dataclass(frozen=True)
class TubeProtocol:
    """One reference's constants (ACT: act-detector-scripts/ACT.py; MOC: src/ACT.py, ACT_utils/)."""

    name: str
    frame_nms: str  # "soft" (rescore) or "hard" (drop): per frame and class, before frame-AP
    frame_nms_iou: float
    link_nms: str  # the same, on each frame's detections of the class before linking
    link_nms_iou: float
    link_top_k: int
    link_iou: float  # a tube takes a detection whose IoU with its last box is >= this
    end_after: int | None  # a tube with no match ends once this many frames passed since its last box (None: K)
    min_score: float  # tubes scoring below this are dropped
    min_length: int  # ... and tubes shorter than this many frames
    tube_nms_iou: float = 0.3  # tube NMS (spatio-temporal IoU) before video-AP


TUBE_PROTOCOLS: dict[str, TubeProtocol] = {
    "moc": TubeProtocol("moc", "soft", 0.6, "soft", 0.6, 10, 0.5, None, 0.005, 15),
    "act": TubeProtocol("act", "hard", 0.3, "hard", 0.3, 10, 0.2, 5, 0.01, 15),
}
DEFAULT_TUBE_PROTOCOL = "moc"


def _tube_score(t: list) -> np.float32:
    return np.mean(np.array([x[2] for x in t]))  # float32 mean of float32 scores, as the reference


def link_video_class(frames: dict[int, tuple[np.ndarray, np.ndarray]], nframes: int, p: TubeProtocol, *,
                     stride: int = 1, min_length: int | None = None) -> list[tuple[np.ndarray, np.float32]]:
    """Tubes of one class in one video. frames: keyframe -> (boxes (n, 4) float32 pixels, scores
    (n,) float32) in file order; keyframes without rows may be absent. Returns [(tube (L, 6) float32:
    frame, x1, y1, x2, y2, detection score; score)] in the reference's output order."""
    end_after = stride if p.end_after is None else p.end_after
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    live: list[list] = []  # a tube: [(frame, box (4,), score), ...]
    done: list[list] = []
    for f in range(1, nframes + 1, stride):
        b, s = frames.get(f, empty)
        b, s = link_candidates(b, s, p.link_nms, p.link_nms_iou, p.link_top_k)
        if live:
            live = [live[i] for i in np.argsort(-np.array([_tube_score(t) for t in live]), kind="stable")]
            ended = []
            for it, t in enumerate(live):
                last_f, last_b, _ = t[-1]
                valid = np.flatnonzero(iou2d(b, last_b) >= p.link_iou)
                if valid.size:
                    j = int(valid[np.argmax(s[valid])])
                    t.append((f, b[j], s[j]))
                    b, s = np.delete(b, j, 0), np.delete(s, j)
                elif f - last_f >= end_after:
                    ended.append(it)
            for it in reversed(ended):  # the reference moves them in reverse order
                done.append(live.pop(it))
        live.extend([(f, b[j], s[j])] for j in range(len(s)))
    out = []
    for t in done + live:
        score = _tube_score(t)
        if score < p.min_score:
            continue
        first, last = t[0][0], min(t[-1][0] + stride - 1, nframes)
        if last + 1 - first < (p.min_length if min_length is None else min_length):
            continue
        tube = np.zeros((last + 1 - first, 6), np.float32)
        tube[:, 0] = np.arange(first, last + 1)
        count = np.zeros((len(tube), 1), np.int32)
        for f, box, sc in t:
            rows = slice(f - first, min(f + stride - 1, last) + 1 - first)
            tube[rows, 1:5] += box
            tube[rows, 5] += sc
            count[rows] += 1
        with np.errstate(invalid="ignore", divide="ignore"):  # ACT: frames of a gap have no box: 0 / 0
            tube[:, 1:] /= count
        out.append((tube, score))
    return out


def link_all(det: FrameDets, gt: TubeGT, videos: list[str], p: TubeProtocol, *, stride: int = 1,
             min_length: int | None = None) -> dict[tuple[str, int], list[tuple[np.ndarray, np.float32]]]:
    """Tubes per (video, class index) after the tube NMS, in the order the NMS keeps them."""
    out = {}
    for iv, v in enumerate(videos):
        in_v = np.flatnonzero(det.vidx == iv)
        for c in np.unique(det.label[in_v]):
            sel = in_v[det.label[in_v] == c]
            frames = {int(f): (det.box[sel[det.frame[sel] == f]], det.score[sel[det.frame[sel] == f]])
                      for f in np.unique(det.frame[sel])}
            tubes = link_video_class(frames, gt.nframes[v], p, stride=stride, min_length=min_length)
            out[(v, int(c))] = [tubes[i] for i in nms_tubes(tubes, p.tube_nms_iou)]
    return out


def video_ap(gt: TubeGT, videos: list[str], tubes: dict[tuple[str, int], list], *, iou: float) -> np.ndarray:
    """(n_classes,) video AP at spatio-temporal IoU `iou`; NaN for a class without GT tubes."""
    out = np.full(len(gt.labels), np.nan)
    for c in range(len(gt.labels)):
        g = {v: [t for label, t in gt.tubes[v] if label == c] for v in videos}
        g = {v: ts for v, ts in g.items() if ts}
        n_gt = sum(len(ts) for ts in g.values())
        if not n_gt:
            continue
        dets = [(v, tube, s) for v in videos for tube, s in tubes.get((v, c), [])]
        order = np.argsort(-np.array([d[2] for d in dets], np.float32), kind="stable")
        is_tp = np.zeros(len(dets), bool)
        for r, j in enumerate(order):
            v, tube, _ = dets[j]
            cand = g.get(v)
            if not cand:
                continue
            ious = [iou3dt(x, tube) for x in cand]
            best = int(np.argmax(ious))
            if ious[best] >= iou:
                is_tp[r] = True
                del cand[best]
        out[c] = pr_to_ap(is_tp, n_gt)
    return out


# MOC's videoAP_050_095: the mean of video-mAP at these ten thresholds (written as the reference computes them)
VIDEO_IOUS_050_095 = tuple(0.5 + 0.05 * i for i in range(10))
