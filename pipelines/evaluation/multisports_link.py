"""MultiSports' frame detections linked into tubes: MMAction2's `link_tubes` (its `MultisportsMetric`;
MultiSports' own evaluator takes tubes already made), with one deliberate difference.

The steps, per test video and class, frame by frame (K = 1 frame per detection):
- that frame's detections of the class (float64, in file order) through the soft NMS of
  `nms_tubelets` (+1 pixel areas; a box overlapping a better one by IoU > 0.6 is rescored by
  1 - IoU), then the 10 best;
- live tubes in decreasing mean-score order each take, among the detections whose VOC IoU (no +1)
  with their last box is >= 0.5, the best-scoring one; a tube that takes none ends at once;
  the detections left start new tubes;
- tubes scoring (mean rescored detection score) below 0.005 or shorter than 15 frames are dropped;
  a tube is float32 rows frame, x1, y1, x2, y2, detection score.
The difference: MMAction2 gives every linked box the score of the last detection of the whole
result list (a loop variable read after its loop: `frm_det[3]` for `frm_dets[3]`), so all its tubes
tie; here each box keeps its own score (docs/EVALUATION.md).

At a keyframe stride s (extraction's --frame-stride) the walk visits frames 1, 1 + s, ..., and a
detection holds its box over its s frames (the last one stops at the video's end); at s = 1 this is
the reference itself.
"""
from __future__ import annotations

import numpy as np

from stagecache.pipelines.evaluation.multisports_ops import iou_voc
from stagecache.pipelines.evaluation.tubes_frame import FrameDets
from stagecache.pipelines.evaluation.tubes_ops import link_candidates

NMS_IOU, TOP_K, LINK_IOU, MIN_SCORE, MIN_LENGTH = 0.6, 10, 0.5, 0.005, 15


def _tube_score(t: list) -> np.float64:
    return np.mean(np.array([x[2] for x in t]))


def link_video_class(frames: dict[int, tuple[np.ndarray, np.ndarray]], nframes: int, *, stride: int = 1,
                     min_length: int = MIN_LENGTH) -> list[tuple[np.ndarray, np.float64]]:
    """Tubes of one class in one video. frames: keyframe -> (boxes (n, 4) float64 pixels, scores (n,)
    float64) in file order. Returns [(tube (L, 6) float32, score)] in the reference's output order
    (ended tubes as they ended, then the live ones)."""
    empty = (np.zeros((0, 4)), np.zeros(0))
    live: list[list] = []  # a tube: [(frame, box (4,), score), ...]
    done: list[list] = []
    for f in range(1, nframes + 1, stride):
        b, s = frames.get(f, empty)
        b, s = link_candidates(b, s, "soft", NMS_IOU, TOP_K)
        live = [live[i] for i in np.argsort(-np.array([_tube_score(t) for t in live]), kind="stable")]
        ended = []
        for it, t in enumerate(live):
            valid = np.flatnonzero(iou_voc(b, t[-1][1]) >= LINK_IOU) if len(b) else np.zeros(0, np.int64)
            if valid.size:
                j = int(valid[np.argmax(s[valid])])
                t.append((f, b[j], s[j]))
                b, s = np.delete(b, j, 0), np.delete(s, j)
            else:
                ended.append(it)
        for it in reversed(ended):  # the reference moves them in reverse order
            done.append(live.pop(it))
        live.extend([(f, b[j], s[j])] for j in range(len(s)))
    out = []
    for t in done + live:
        score = _tube_score(t)
        if score < MIN_SCORE:
            continue
        first, last = t[0][0], min(t[-1][0] + stride - 1, nframes)
        if last + 1 - first < min_length:
            continue
        tube = np.zeros((last + 1 - first, 6), np.float32)
        tube[:, 0] = np.arange(first, last + 1)
        for f, box, sc in t:
            rows = slice(f - first, min(f + stride - 1, last) + 1 - first)
            tube[rows, 1:5] += box
            tube[rows, 5] += sc
        out.append((tube, score))
    return out


def link_all(det: FrameDets, nframes: dict[str, int], videos: list[str], n_classes: int, *, stride: int = 1,
             min_length: int = MIN_LENGTH) -> dict[int, list[tuple[str, np.float64, np.ndarray]]]:
    """Class index -> [(video, score, tube)], videos in test-list order (the reference's
    `video_detections.pkl` layout). det: rows not through any NMS, boxes and scores as float64."""
    out: dict[int, list] = {c: [] for c in range(n_classes)}
    box, score = det.box.astype(np.float64), det.score.astype(np.float64)
    for iv, v in enumerate(videos):
        in_v = np.flatnonzero(det.vidx == iv)
        for c in np.unique(det.label[in_v]):
            sel = in_v[det.label[in_v] == c]
            frames = {int(f): (box[sel[det.frame[sel] == f]], score[sel[det.frame[sel] == f]])
                      for f in np.unique(det.frame[sel])}
            for tube, s in link_video_class(frames, nframes[v], stride=stride, min_length=min_length):
                out[int(c)].append((v, s, tube))
    return out
