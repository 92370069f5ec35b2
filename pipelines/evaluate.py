"""AVA frame-mAP: the ActivityNet 2019 AVA evaluator's protocol, vectorised with numpy.

Protocol (checked against ActivityNet `Evaluation/ava`: `read_csv`, `per_image_evaluation`,
`object_detection_evaluation`, `metrics`):

1. Rows whose class is not in the label map are dropped (GT and detections). Keyframes listed as
   excluded are dropped (GT and detections).
2. Per keyframe at most `max_dets_per_kf` (50) (box, class) detections are kept. The official code
   keeps them with a bounded min-heap of tuples (score, class, y1, x1, y2, x2) that replaces its root
   only on a strictly larger score; we reproduce its result exactly, tie rule included: every
   detection scoring above the 50th-best score s* is kept; of those scoring exactly s*, the
   candidates are the ones among the first 50 detections (file order) with score >= s*, and the
   largest (class, y1, x1, y2, x2) tuples among them fill the remaining places.
   `max_dets_per_kf=None` keeps everything (PySlowFast's evaluation of its own outputs).
3. Detections with an empty box (x1 >= x2 or y1 >= y2) or a score <= -10 (the official per-image
   NMS call with iou 1.0 only sorts and applies its default score threshold of -10) are dropped.
4. Per (keyframe, class), detections in descending score order each take the GT box of maximal IoU
   (the first such box in GT order on IoU ties); it is a TP if that IoU >= `iou_threshold` and the
   box is not yet matched, else a FP (no fall back to the second-best box). Detections on keyframes
   without GT are FPs (MMAction2's evaluator drops them instead).
5. Per class, all detections sorted by descending score, precision/recall cumulated, AP by all-point
   interpolation (precision made monotone from the right, sum of recall steps x precision).
   mAP = mean over classes with at least one GT box (others are NaN).

Ties in score: the official code orders equal scores by numpy's default (unstable quicksort)
argsort reversed, i.e. implementation-defined. We use a stable rule instead: equal scores keep the
order in which the detections were given (both for matching in a keyframe and for the PR ranking).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from extract import ava_io

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_LABEL_MAP = DATA_DIR / "ava_action_list_60.pbtxt"
GROUPS_FILE = DATA_DIR / "ava_class_groups.json"
_SCORE_FLOOR = -10.0  # official NMS default score_threshold (keeps score > -10)
_CHUNK = 1 << 22  # detections per IoU batch: bounds memory with the cap off


@dataclass
class EvalResult:
    map: float
    per_class: dict[int, float]  # label id -> AP (NaN: no GT)
    class_names: dict[int, str] = field(default_factory=dict)
    num_gt: dict[int, int] = field(default_factory=dict)
    num_det: dict[int, int] = field(default_factory=dict)
    # label id -> (precision (D,), recall (D,)) in ranking order, for PR plots
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def group_map(self, groups: dict[str, list[int]]) -> dict[str, float]:
        """Mean AP over each group's classes that have GT (NaN when none has)."""
        out = {}
        for name, ids in groups.items():
            aps = [self.per_class[i] for i in ids if i in self.per_class and not math.isnan(self.per_class[i])]
            out[name] = float(np.mean(aps)) if aps else float("nan")
        return out

    def to_json(self, groups: dict[str, list[int]] | None = None) -> dict:
        """`{"mAP", "per_class": {"<id>": ap}, "groups": {...}}`; NaN is written as null."""
        nn = lambda v: None if v is None or math.isnan(v) else float(v)  # noqa: E731
        return {"mAP": nn(self.map), "per_class": {str(k): nn(v) for k, v in self.per_class.items()},
                "groups": {k: nn(v) for k, v in (self.group_map(groups) if groups else {}).items()}}

    def table(self) -> str:
        lines = [f"{'id':>4}  {'AP':>7}  {'#gt':>6}  {'#det':>8}  name"]
        for k, ap in self.per_class.items():
            lines.append(f"{k:>4}  {'   n/a' if math.isnan(ap) else f'{ap:7.4f}'}  {self.num_gt.get(k, 0):>6}  "
                         f"{self.num_det.get(k, 0):>8}  {self.class_names.get(k, '')}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- core

def _segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets (n_seg+1,) and segment id per row of an already sorted key array."""
    if sorted_keys.size == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], brk, [sorted_keys.size]]).astype(np.int64)
    seg = np.repeat(np.arange(starts.size - 1), np.diff(starts))
    return starts, seg


def _official_cap(kf, cls, box, score, cap: int) -> np.ndarray:
    """Boolean keep-mask equal to the official bounded-heap selection (see module doc, step 2)."""
    n = kf.size
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    kfd, _ = _dense_ids(kf)
    o = np.lexsort((-score, kfd))  # per keyframe by descending score; stable: ties in file order
    starts, seg = _segments(kfd[o])
    counts = np.diff(starts)
    over_kf = counts > cap
    if not over_kf.any():
        return keep
    sstar_kf = np.full(counts.size, -np.inf)
    sstar_kf[over_kf] = score[o][starts[:-1][over_kf] + cap - 1]
    # per row (in input index space) its keyframe segment and threshold
    seg_of = np.empty(n, np.int64)
    seg_of[o] = seg
    over = over_kf[seg_of]
    s_star = sstar_kf[seg_of]
    above = over & (score > s_star)
    at = over & (score == s_star)
    keep[over] = False
    keep[above] = True
    # candidates at s*: among the first `cap` rows (file order) of the keyframe scoring >= s*
    oi = np.argsort(seg_of, kind="stable")  # file order within keyframe
    ge = (over & (score >= s_star))[oi].astype(np.int64)
    cum = np.cumsum(ge)
    st_i, seg_i = _segments(seg_of[oi])
    before = np.concatenate([[0], cum])[st_i[:-1]]
    pos = cum - before[seg_i]
    cand = np.zeros(n, dtype=bool)
    cand[oi] = (ge > 0) & (pos <= cap)
    cand &= at
    m_kf = np.bincount(seg_of[above], minlength=counts.size)
    c = np.flatnonzero(cand)
    if c.size:
        # official tuple order (score, class, y1, x1, y2, x2): keep the largest ones
        oc = np.lexsort((box[c, 2], box[c, 3], box[c, 0], box[c, 1], cls[c], seg_of[c]))
        cs = c[oc]
        st_c, seg_c = _segments(seg_of[cs])
        rank_from_end = (st_c[1:][seg_c] - 1) - np.arange(cs.size)
        room = cap - m_kf[seg_of[cs]]
        keep[cs[rank_from_end < room]] = True
    return keep


def _dense_ids(kf: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense 0..K-1 ids of integer keys; O(n) when equal keys are contiguous (a model's output file)."""
    if kf.size == 0:
        return np.zeros(0, np.int64), 0
    change = np.concatenate([[True], kf[1:] != kf[:-1]])
    run_vals = kf[change]
    if np.unique(run_vals).size == run_vals.size:
        return np.cumsum(change) - 1, int(run_vals.size)
    u, inv = np.unique(kf, return_inverse=True)
    return inv.ravel().astype(np.int64), int(u.size)


def _cap_prefilter(kf: np.ndarray, score: np.ndarray, cap: int, n_bins: int = 256) -> np.ndarray:
    """Cheap superset of the rows the cap can keep: per keyframe, the score bins reaching its top `cap`.

    Rows in lower bins score below the keyframe's cap-th best score, so they can neither be kept nor
    change the official selection (which only looks at rows scoring >= that score). Bins: the float32
    bit pattern made monotone, cut to 8192 coarse bins, merged to ~`n_bins` of equal mass. O(n).
    """
    kfd, K = _dense_ids(kf)
    f = score.astype(np.float32) + np.float32(0.0)  # monotone (ties stay ties); -0.0 -> +0.0
    bits = f.view(np.int32)
    bits = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))  # int32 order == float order
    coarse = (bits >> 19).astype(np.int64) + 4096  # (N,) in [0, 8192)
    hist = np.bincount(coarse, minlength=8192)
    lut = ((np.cumsum(hist) - hist) * n_bins) // max(score.size, 1)
    b = lut[coarse]
    nb = int(lut[-1]) + 1
    counts = np.bincount(kfd * nb + b, minlength=K * nb).reshape(K, nb)
    reach = np.cumsum(counts[:, ::-1], axis=1) >= cap
    boundary = np.where(reach.any(axis=1), nb - 1 - np.argmax(reach, axis=1), 0)
    return b >= boundary[kfd]


def _iou_pairs(db: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (P, 4) x1y1x2y2 pairs, in float64 as the official code."""
    iw = np.clip(np.minimum(db[:, 2], gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0]), 0, None)
    ih = np.clip(np.minimum(db[:, 3], gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1]), 0, None)
    inter = iw * ih
    union = ((db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1]) + (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1])
             - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(d_group, d_box, g_group_sorted, g_box_sorted, thr: float) -> np.ndarray:
    """TP flags of detections given in ranking order; GT sorted by group (file order within)."""
    nd = d_group.size
    tp = np.zeros(nd, dtype=bool)
    if nd == 0 or g_group_sorted.size == 0:
        return tp
    best_gt = np.full(nd, -1, np.int64)
    best_iou = np.zeros(nd)
    n_groups = int(max(d_group.max(), g_group_sorted[-1])) + 1
    dense = n_groups <= 50_000_000
    if dense:
        # dense table of GT ranges per group: gathers instead of binary searches with random needles
        g_cnt = np.bincount(g_group_sorted, minlength=n_groups)
        g_lo = np.cumsum(g_cnt) - g_cnt
    for a in range(0, nd, _CHUNK):
        b = min(nd, a + _CHUNK)
        if dense:
            lo, cnt = g_lo[d_group[a:b]], g_cnt[d_group[a:b]]
        else:
            lo = np.searchsorted(g_group_sorted, d_group[a:b], "left")
            cnt = np.searchsorted(g_group_sorted, d_group[a:b], "right") - lo
        has = np.flatnonzero(cnt > 0)
        if has.size == 0:
            continue
        c = cnt[has]
        off = np.concatenate([[0], np.cumsum(c)])
        rep = np.repeat(np.arange(has.size), c)  # pair -> detection (within `has`)
        gi = lo[has][rep] + (np.arange(off[-1]) - off[:-1][rep])
        iou = _iou_pairs(d_box[a + has[rep]], g_box_sorted[gi])
        mx = np.maximum.reduceat(iou, off[:-1])
        first = np.flatnonzero(iou == mx[rep])
        _, fi = np.unique(rep[first], return_index=True)  # first max per detection (argmax rule)
        best_gt[a + has] = gi[first[fi]]
        best_iou[a + has] = mx
    ok = np.flatnonzero((best_gt >= 0) & (best_iou >= thr))
    # the first (highest ranked) detection claiming a GT box gets it; later ones are FPs
    _, first_claim = np.unique(best_gt[ok], return_index=True)
    tp[ok[first_claim]] = True
    return tp


def frame_map(gt_kf, gt_box, gt_class, det_kf, det_box, det_class, det_score, *, class_ids,
              excluded_kf=None, max_dets_per_kf: int | None = 50, iou_threshold: float = 0.5,
              class_names: dict[int, str] | None = None, keep_curves: bool = False) -> EvalResult:
    """Frame-mAP over flattened (box, class) rows; `*_kf` are integer keyframe keys of the caller."""
    class_ids = np.asarray(sorted(int(c) for c in class_ids), dtype=np.int64)
    C = class_ids.size
    gt_kf, gt_class = np.asarray(gt_kf, np.int64).ravel(), np.asarray(gt_class, np.int64).ravel()
    det_kf, det_class = np.asarray(det_kf, np.int64).ravel(), np.asarray(det_class, np.int64).ravel()
    gt_box = np.asarray(gt_box, np.float64).reshape(-1, 4)
    det_box = np.asarray(det_box).reshape(-1, 4)  # converted to float64 after the cap (memory)
    det_score = np.asarray(det_score, np.float64).ravel()
    if not (gt_kf.size == gt_class.size == gt_box.shape[0]):
        raise ValueError("frame_map: gt_kf, gt_box, gt_class lengths differ")
    if not (det_kf.size == det_class.size == det_box.shape[0] == det_score.size):
        raise ValueError("frame_map: det_kf, det_box, det_class, det_score lengths differ")

    if np.isnan(det_score).any():
        raise ValueError("frame_map: NaN detection scores")
    gm = np.isin(gt_class, class_ids)
    dm = np.isin(det_class, class_ids)
    if excluded_kf is not None and len(excluded_kf):
        ex = np.fromiter(excluded_kf, np.int64) if not isinstance(excluded_kf, np.ndarray) else excluded_kf
        gm &= ~np.isin(gt_kf, ex)
        dm &= ~np.isin(det_kf, ex)
    gt_kf, gt_box, gt_cls = gt_kf[gm], gt_box[gm], np.searchsorted(class_ids, gt_class[gm])
    if max_dets_per_kf is not None and dm.any():
        dm[dm] = _cap_prefilter(det_kf[dm], det_score[dm], int(max_dets_per_kf))
    d_idx = np.flatnonzero(dm)  # original row order: the tie rule
    det_kf, det_cls, det_score = det_kf[d_idx], det_class[d_idx], det_score[d_idx]
    det_box = np.asarray(det_box[d_idx], np.float64)
    if max_dets_per_kf is not None:
        k = _official_cap(det_kf, det_cls, det_box, det_score, int(max_dets_per_kf))
        det_kf, det_box, det_cls, det_score = det_kf[k], det_box[k], det_cls[k], det_score[k]
    valid = (det_box[:, 0] < det_box[:, 2]) & (det_box[:, 1] < det_box[:, 3]) & (det_score > _SCORE_FLOOR)
    det_kf, det_box, det_score = det_kf[valid], det_box[valid], det_score[valid]
    det_cls = np.searchsorted(class_ids, det_cls[valid])

    # one integer group per (keyframe, class); GT sorted by group, file order within
    kfs, inv = np.unique(np.concatenate([gt_kf, det_kf]), return_inverse=True)
    inv = inv.ravel()
    g_group = inv[:gt_kf.size] * C + gt_cls
    d_group = inv[gt_kf.size:] * C + det_cls
    og = np.argsort(g_group, kind="stable")
    # global rank by descending score, ties in the order given (stable). Matching only needs this
    # order: the first-ranked detection claiming a GT box (same keyframe and class) gets it.
    od = np.argsort(-det_score, kind="stable")
    tp_sorted = _match(d_group[od], det_box[od], g_group[og], gt_box[og], iou_threshold)
    n_d = det_score.size
    score_rank = np.empty(n_d, np.int64)
    score_rank[od] = np.arange(n_d)

    # ranking per class
    num_gt = np.bincount(gt_cls, minlength=C)
    oc = od[np.argsort(det_cls[od].astype(np.int32), kind="stable")]  # by class, then score rank
    cls_s = det_cls[oc]
    tp_s = tp_sorted[score_rank[oc]].astype(np.float64)
    starts = np.searchsorted(cls_s, np.arange(C + 1))
    num_det = np.diff(starts)
    rank = np.arange(cls_s.size) - starts[cls_s] + 1
    cum = np.cumsum(tp_s)
    cum_tp = cum - np.concatenate([[0.0], cum])[starts[cls_s]]
    precision = cum_tp / rank
    ngt = num_gt[cls_s].astype(np.float64)
    recall = np.divide(cum_tp, ngt, out=np.zeros_like(cum_tp), where=ngt > 0)
    # precision made monotone from the right inside each class (offset keeps classes apart)
    rev = (precision + 2.0 * (C - 1 - cls_s))[::-1]
    interp = (np.maximum.accumulate(rev) - 2.0 * (C - 1 - cls_s)[::-1])[::-1]
    prev = np.concatenate([[0.0], recall[:-1]])
    prev[starts[:-1][num_det > 0]] = 0.0
    ap = np.bincount(cls_s, weights=(recall - prev) * interp, minlength=C)
    ap = np.where(num_gt > 0, ap, np.nan)

    names = class_names or {}
    per_class = {int(c): float(a) for c, a in zip(class_ids, ap)}
    curves = {}
    if keep_curves:
        for j, c in enumerate(class_ids.tolist()):
            if num_gt[j] > 0:
                curves[c] = (precision[starts[j]:starts[j + 1]].copy(), recall[starts[j]:starts[j + 1]].copy())
    has = ~np.isnan(ap)
    m = float(ap[has].mean()) if has.any() else float("nan")
    return EvalResult(m, per_class, {int(c): names.get(int(c), "") for c in class_ids},
                      {int(c): int(n) for c, n in zip(class_ids, num_gt)},
                      {int(c): int(n) for c, n in zip(class_ids, num_det)}, curves)


def frame_map_single_label(gt_kf, gt_box, gt_label, det_kf, det_box, det_scores, *, class_ids,
                           max_dets_per_kf: int | None = None, iou_threshold: float = 0.5,
                           class_names=None, keep_curves=False) -> EvalResult:
    """Frame-mAP for single-label datasets (JHMDB-21, UCF101-24).

    Each GT box has exactly one label; each detected box has a score per class
    (`det_scores` (N, C), column j = `class_ids[j]`). Every (box, class) pair becomes one detection
    and the AVA machinery above scores it: per class, VOC-style all-point AP at IoU 0.5. The cap is
    off by default, as in the JHMDB/UCF101-24 frame-mAP protocols.
    """
    det_scores = np.asarray(det_scores, np.float64)
    n, C = det_scores.shape
    if C != len(class_ids):
        raise ValueError(f"det_scores has {C} columns but {len(class_ids)} class ids")
    det_box = np.asarray(det_box, np.float64).reshape(-1, 4)
    return frame_map(gt_kf, gt_box, gt_label, np.repeat(np.asarray(det_kf), C), np.repeat(det_box, C, axis=0),
                     np.tile(np.asarray(class_ids, np.int64), n), det_scores.ravel(), class_ids=class_ids,
                     max_dets_per_kf=max_dets_per_kf, iou_threshold=iou_threshold, class_names=class_names,
                     keep_curves=keep_curves)


# ----------------------------------------------------------------------------- files

def keyframe_keys(videos: list[np.ndarray], timestamps: list[np.ndarray]) -> list[np.ndarray]:
    """Shared int64 keyframe keys for several (video, timestamp) column pairs (timestamps as numbers)."""
    allv = np.concatenate([np.asarray(v, dtype=str) for v in videos]) if videos else np.zeros(0, str)
    _, inv = np.unique(allv, return_inverse=True)
    out, a = [], 0
    for v, t in zip(videos, timestamps):
        tk = ava_io.timestamp_keys(t)
        if tk.size and (tk.min() < 0 or tk.max() >= 1 << 32):
            raise ValueError("timestamps must lie in [0, 4.29e6) seconds")
        out.append(inv[a:a + len(v)].astype(np.int64) * (1 << 32) + tk)
        a += len(v)
    return out


def check_single_label(ann: ava_io.Annotations, path) -> None:
    kk = keyframe_keys([ann.video], [ann.timestamp])[0]
    rows = np.column_stack([kk.astype(np.float64), ann.box.astype(np.float64)])
    uniq, inv, cnt = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(cnt[inv.ravel()] > 1)
    if multi.size:
        i = int(multi[0])
        raise ValueError(f"{path}: --single-label but the box of row {i + 1} (video {ann.video[i]}, "
                         f"t={ann.timestamp[i]}) has several labels")


def evaluate_files(gt_csv, pred_csv, label_map_path=DEFAULT_LABEL_MAP, excluded_csv=None,
                   max_dets_per_kf: int | None = 50, iou_threshold: float = 0.5, single_label: bool = False,
                   keep_curves: bool = False) -> EvalResult:
    """Official-protocol frame-mAP of an AVA predictions CSV against a GT CSV."""
    lm = ava_io.read_label_map(label_map_path)
    gt = ava_io.read_annotations(gt_csv)
    pr = ava_io.read_predictions(pred_csv)
    if single_label:
        check_single_label(gt, gt_csv)
    vids, tss = [gt.video, pr.video], [gt.timestamp, pr.timestamp]
    ex_list = sorted(ava_io.read_excluded(excluded_csv)) if excluded_csv else []
    if ex_list:
        vids.append(np.array([v for v, _ in ex_list], dtype=str))
        tss.append(np.array([k / 1000.0 for _, k in ex_list]))
    keys = keyframe_keys(vids, tss)
    return frame_map(keys[0], gt.box, gt.action, keys[1], pr.box, pr.action, pr.score, class_ids=lm.ids,
                     excluded_kf=keys[2] if ex_list else None, max_dets_per_kf=max_dets_per_kf,
                     iou_threshold=iou_threshold, class_names=dict(zip(lm.ids, lm.names)), keep_curves=keep_curves)


def _ava_names() -> dict[int, str]:
    lm = ava_io.read_label_map(DEFAULT_LABEL_MAP)
    return {i: n.strip().lower() for i, n in zip(lm.ids, lm.names)}


def class_groups(label_map: ava_io.LabelMap, groups_json=None) -> dict[str, list[int]]:
    """Class groups restricted to `label_map`'s ids.

    Without `groups_json`: the shipped AVA grouping (pose / person-object / person-person), valid
    only for AVA label maps (ids in 1..80 whose names agree with the AVA list). For any other label
    map pass a JSON file `{"<group>": [ids...]}` (or `{"groups": {...}}`).
    """
    if groups_json is None:
        ref = _ava_names()
        shared = [(i, n) for i, n in zip(label_map.ids, label_map.names) if i in ref]
        is_ava = (all(1 <= i <= 80 for i in label_map.ids) and shared
                  and all(ref[i] == n.strip().lower() for i, n in shared))
        if not is_ava:
            raise ValueError("class_groups: the label map is not the AVA action list; pass a groups JSON "
                             "file {\"<group>\": [ids]} for other datasets")
        groups_json = GROUPS_FILE
    with open(groups_json) as f:
        data = json.load(f)
    groups = data.get("groups", data) if isinstance(data, dict) else None
    if not isinstance(groups, dict):
        raise ValueError(f"{groups_json}: expected {{\"<group>\": [ids]}}")
    ids = set(label_map.ids)
    return {str(g): [int(i) for i in v if int(i) in ids] for g, v in groups.items() if not str(g).startswith("_")}


def plot_pr_curves(result: EvalResult, out_dir, by: str = "class", groups: dict[str, list[int]] | None = None) -> list[str]:
    """PNG precision/recall curves: one file per class (`by="class"`) or per group (curves overlaid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if by not in ("class", "group"):
        raise ValueError(f"plot by {by!r}; valid: ['class', 'group']")
    if by == "group" and not groups:
        raise ValueError("plot by group needs groups")
    os.makedirs(out_dir, exist_ok=True)
    sets = ({f"class_{c:03d}": [c] for c in result.curves} if by == "class"
            else {f"group_{g}": ids for g, ids in groups.items()})
    written = []
    for fname, ids in sets.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        for c in ids:
            if c not in result.curves:
                continue
            p, r = result.curves[c]
            interp = np.maximum.accumulate(p[::-1])[::-1] if p.size else p
            ax.step(np.concatenate([[0.0], r]), np.concatenate([interp[:1] if p.size else [0.0], interp]),
                    where="pre", label=f"{c} {result.class_names.get(c, '')[:24]} AP={result.per_class[c]:.3f}")
        ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
        ax.set_title(fname.replace("_", " ", 1))
        if ax.get_legend_handles_labels()[0] and len(ids) <= 20:
            ax.legend(fontsize=6, loc="lower left")
        path = os.path.join(out_dir, fname.replace("/", "-") + ".png")
        fig.savefig(path, dpi=90), plt.close(fig)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- command logic

@dataclass
class EvaluateArgs:
    gt: str
    pred: str
    label_map: str = str(DEFAULT_LABEL_MAP)
    excluded: str | None = None
    no_cap: bool = False
    iou: float = 0.5
    json_path: str | None = None
    plots: str | None = None
    plot_by: str = "class"
    groups: str | None = None
    single_label: bool = False

    def __post_init__(self):
        for name in ("gt", "pred", "label_map", "excluded", "groups"):
            p = getattr(self, name)
            if p is not None and not os.path.isfile(p):
                raise ValueError(f"--{name.replace('_', '-')}: file not found: {p}")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"--iou must be in (0, 1], got {self.iou}")
        if self.plot_by not in ("class", "group"):
            raise ValueError(f"--plot-by must be 'class' or 'group', got {self.plot_by!r}")


def run_evaluate(args: EvaluateArgs, echo=print) -> EvalResult:
    cap = None if (args.no_cap or args.single_label) else 50
    res = evaluate_files(args.gt, args.pred, args.label_map, args.excluded, max_dets_per_kf=cap,
                         iou_threshold=args.iou, single_label=args.single_label, keep_curves=bool(args.plots))
    lm = ava_io.read_label_map(args.label_map)
    try:
        groups = class_groups(lm, args.groups)
    except ValueError:
        groups = {}  # not AVA and no groups file: no grouped mAP
    echo(f"frame-mAP@{args.iou:g}: {res.map:.4f}")
    for g, v in res.group_map(groups).items():
        echo(f"  {g:<14} mAP: {v:.4f}")
    echo(res.table())
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(res.to_json(groups), f, indent=2)
        with open(os.path.join(os.path.dirname(os.path.abspath(args.json_path)), "evaluate_config.json"), "w") as f:
            json.dump(asdict(args), f, indent=2)
    if args.plots:
        plot_pr_curves(res, args.plots, by=args.plot_by, groups=groups)
    return res
