"""Frame-mAP under the official ActivityNet, PySlowFast and MMAction2 protocols (chosen by name).

Inputs are flattened (box, class) rows in file order; `*_kf` are integer keyframe keys. What each
protocol does (each point checked in that code; table in docs/EVALUATION.md):

- official (ActivityNet `get_ava_performance.py` + `ava/`, 2019): per keyframe a bounded heap keeps
  50 rows (`heap_order`); kept rows in the heap's stable score order; GT in its heap order; empty
  detection boxes dropped after the cap; detections on keyframes without GT are FPs; float64.
- pyslowfast (`slowfast/utils/ava_eval_helper.py` `evaluate_ava_from_files` + `ava_evaluation/`): no
  cap, detections and GT in file order, otherwise as official.
- mmaction2 (`mmaction/evaluation/functional/ava_utils.py` `ava_eval`, `ignore_empty_frames=True` as
  its AVAMetric calls it): no cap; rows stably sorted by descending score; boxes and scores float32;
  no empty-box filter; only GT keyframes are scored (other detections dropped); GT of excluded
  keyframes still counts; a class enters the mean only if it has detections there.
"""
from __future__ import annotations

import numpy as np

from stagecache.core.errors import UserError
from stagecache.pipelines.evaluation.core import class_index, first_appearance_ids, grouped_desc_order, match, member, per_class_ap
from stagecache.pipelines.evaluation.heap_order import HeapChunk, Kept, official_heap

PROTOCOLS = ("official", "pyslowfast", "mmaction2")


class ProtocolInputError(UserError, ValueError):
    """Input that the chosen protocol's own evaluator refuses."""


def _has_nan(a: np.ndarray) -> bool:
    """`np.isnan(a).any()`; a NaN (or +inf with -inf) makes the sum NaN, so one pass without temporaries
    settles the usual case."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = a.sum()
    return bool(np.isnan(total)) and bool(np.isnan(a).any())


def _as_arrays(gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score):
    gt_kf, gt_class = np.asarray(gt_kf, np.int64).ravel(), np.asarray(gt_class, np.int64).ravel()
    det_kf, det_class = np.asarray(det_kf, np.int64).ravel(), np.asarray(det_class, np.int64).ravel()
    gt_box = np.asarray(gt_box, np.float64).reshape(-1, 4)
    det_box = np.asarray(det_box, np.float64).reshape(-1, 4)
    det_score = np.asarray(det_score, np.float64).ravel()
    gt_score = np.ones(gt_kf.size) if gt_score is None else np.asarray(gt_score, np.float64).ravel()
    if not (gt_kf.size == gt_class.size == gt_box.shape[0] == gt_score.size):
        raise ValueError("frame_map: gt_kf, gt_box, gt_class (, gt_score) lengths differ")
    if not (det_kf.size == det_class.size == det_box.shape[0] == det_score.size):
        raise ValueError("frame_map: det_kf, det_box, det_class, det_score lengths differ")
    if _has_nan(det_score) or _has_nan(det_box) or _has_nan(gt_box):
        raise ValueError("frame_map: NaN in detection scores or boxes")
    return gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score


def _kf_index(keys_gt: np.ndarray, keys_det: np.ndarray):
    """Dense ids of the GT keyframe keys, and each detection's GT keyframe id (-1: keyframe without GT).

    Only equality is used. Detection keys are looked up once per run of equal keys (a keyframe's rows
    are contiguous in a model's output file).
    """
    u, gk = np.unique(keys_gt, return_inverse=True)
    if keys_det.size == 0:
        return gk.ravel(), np.zeros(0, np.int64)
    brk = np.flatnonzero(keys_det[1:] != keys_det[:-1]) + 1
    run_keys = keys_det[np.concatenate([[0], brk])]
    pos = np.minimum(np.searchsorted(u, run_keys), max(u.size - 1, 0))
    run_id = np.where(u[pos] == run_keys, pos, -1) if u.size else np.full(run_keys.size, -1)
    return gk.ravel(), np.repeat(run_id, np.diff(np.concatenate([[0], brk, [keys_det.size]])))


def _mean_by_id(aps: np.ndarray, class_ids: np.ndarray) -> float:
    """`np.nanmean` over the evaluator's array indexed by label id - 1 (NaN where no GT)."""
    if class_ids.size == 0:
        return float("nan")
    if class_ids.min() < 1:
        full = aps
    else:
        full = np.full(int(class_ids.max()), np.nan)
        full[class_ids - 1] = aps
    if np.isnan(full).all():
        return float("nan")
    return float(np.nanmean(full))


def frame_map_arrays(gt_kf, gt_box, gt_class, det_kf, det_box, det_class, det_score, *, class_ids,
                     excluded_kf=None, protocol: str = "official", max_dets_per_kf: int | None = 50,
                     iou_threshold: float = 0.5, gt_score=None, keep_curves: bool = False) -> dict:
    """Per-class AP, counts and mAP of one protocol; see `pipelines.evaluation.ava.frame_map`."""
    if protocol not in _RUNNERS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    class_ids = np.asarray(sorted(int(c) for c in class_ids), dtype=np.int64)
    arrs = _as_arrays(gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score)
    ex = np.zeros(0, np.int64) if excluded_kf is None else np.asarray(list(excluded_kf) if not isinstance(
        excluded_kf, np.ndarray) else excluded_kf, np.int64)
    out = _RUNNERS[protocol](*arrs, class_ids=class_ids, ex=ex, cap=max_dets_per_kf, thr=iou_threshold,
                             keep_curves=keep_curves)
    out["class_ids"] = class_ids
    return out


def heap_arrays(kf: np.ndarray, cls: np.ndarray, box: np.ndarray, score: np.ndarray, class_ids: np.ndarray,
                cap: int) -> tuple[Kept, np.ndarray]:
    """The official heap over in-memory rows (file order): kept rows, and the key of each keyframe index.

    Rows of classes outside `class_ids` never reach a heap; keyframes are numbered in the order their
    first such row appears (the reader's dict insertion order). `cap` < 1: no cap.
    """
    rows = np.flatnonzero(member(cls, class_ids))
    kfo, K = first_appearance_ids(kf[rows])
    if np.any(kfo[1:] < kfo[:-1]):  # keyframes interleaved: each one's rows together, file order kept
        o = np.argsort(kfo, kind="stable")
        rows, kfo = rows[o], kfo[o]
    key_of = np.empty(K, np.int64)
    key_of[kfo] = kf[rows]
    starts = np.concatenate([[0], np.cumsum(np.bincount(kfo, minlength=K))])
    b = box[rows]
    chunk = HeapChunk(0, cls[rows], score[rows], *(np.ascontiguousarray(b[:, j]) for j in range(4)))
    return official_heap([chunk], starts, class_ids, None, cap), key_of


def official_from_kept(kept: Kept, key_of: np.ndarray, gt_kf, gt_box, gt_class, gt_score, *, class_ids, ex,
                       thr, keep_curves):
    """The official protocol's numbers from the detections its heap kept (`heap_arrays`, or a file's chunks
    through `heap_order.official_heap`); `key_of`: keyframe index -> key."""
    C = class_ids.size
    valid = (kept.box[:, 0] < kept.box[:, 2]) & (kept.box[:, 1] < kept.box[:, 3])  # `_remove_invalid_boxes`
    if not valid.all():
        kept = Kept(*(a[valid] for a in kept))
    gm = member(gt_class, class_ids) & ~np.isin(gt_kf, ex)
    g_idx = np.flatnonzero(gm)
    # GT passes the same heap code, without a cap: its order decides argmax ties between boxes
    g, g_key = heap_arrays(gt_kf[g_idx], gt_class[g_idx], gt_box[g_idx], gt_score[g_idx], class_ids, 0)
    return _score(g_key[g.run], g.box, class_ids[g.cls], key_of[kept.run], kept.box, class_ids[kept.cls],
                  kept.score, class_ids, thr, keep_curves, num_gt=np.bincount(g.cls, minlength=C))


def _official(gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score, *, class_ids, ex, cap, thr,
              keep_curves):
    live = ~np.isin(det_kf, ex) if ex.size else None
    if live is not None and not live.all():
        det_kf, det_box, det_class, det_score = det_kf[live], det_box[live], det_class[live], det_score[live]
    kept, key_of = heap_arrays(det_kf, det_class, det_box, det_score, class_ids, int(cap or 0))
    return official_from_kept(kept, key_of, gt_kf, gt_box, gt_class, gt_score, class_ids=class_ids, ex=ex, thr=thr,
                              keep_curves=keep_curves)


def _pyslowfast(gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score, *, class_ids, ex, cap,
                thr, keep_curves):
    C = class_ids.size
    gm = member(gt_class, class_ids) & ~np.isin(gt_kf, ex)
    d_idx = np.flatnonzero(member(det_class, class_ids) & ~np.isin(det_kf, ex))
    kfo, _ = first_appearance_ids(det_kf[d_idx])  # the detections dict's insertion order
    if np.any(kfo[1:] < kfo[:-1]):  # file order within each keyframe
        d_idx = d_idx[np.argsort(kfo, kind="stable")]
    box = det_box[d_idx]
    valid = (box[:, 0] < box[:, 2]) & (box[:, 1] < box[:, 3])  # `_remove_invalid_boxes`
    d_idx, box = d_idx[valid], box[valid]
    g_idx = np.flatnonzero(gm)
    return _score(gt_kf[g_idx], gt_box[g_idx], gt_class[g_idx], det_kf[d_idx], box,
                  det_class[d_idx], det_score[d_idx], class_ids, thr, keep_curves,
                  num_gt=np.bincount(np.searchsorted(class_ids, gt_class[g_idx]), minlength=C))


def _score(g_kf, g_box, g_cls, d_kf, d_box, d_cls, d_score, class_ids, thr, keep_curves, num_gt,
           class_order=None):
    """Match (rows already in matching order per keyframe, keyframes in concatenation order) and AP."""
    C = class_ids.size
    gk, dk = _kf_index(g_kf, d_kf)
    gc, dc = class_index(g_cls, class_ids), class_index(d_cls, class_ids)
    g_grp = gk * C + gc
    og = np.argsort(g_grp, kind="stable")
    # detections stay in their order (matching order inside each keyframe, hence inside each group)
    tp = match(np.where(dk >= 0, dk * C + dc, -1), d_box, g_grp[og], g_box[og], thr)
    aps, num_det, curves = per_class_ap(dc, d_score, tp, num_gt, keep_curves)
    if class_order is None:
        m = _mean_by_id(aps, class_ids)
    else:  # mmaction2: nanmean over its classes in their dict order
        vals = [aps[c] for c in class_order]
        m = float(np.nanmean(vals)) if vals and not np.isnan(vals).all() else float("nan")
    return {"ap": aps, "map": m, "num_gt": num_gt, "num_det": num_det,
            "curves": {int(class_ids[c]): v for c, v in curves.items()}}


def _mmaction2(gt_kf, gt_box, gt_class, gt_score, det_kf, det_box, det_class, det_score, *, class_ids, ex, cap,
               thr, keep_curves):
    C = class_ids.size
    gm = member(gt_class, class_ids)
    num_gt = np.bincount(np.searchsorted(class_ids, gt_class[gm]), minlength=C)  # excluded GT counts too
    g_idx = np.flatnonzero(gm)
    g_kfo, _ = first_appearance_ids(gt_kf[g_idx])  # `for k in gt_bboxes`
    live = ~np.isin(gt_kf[g_idx], ex)
    g_idx, g_kfo = g_idx[live], g_kfo[live]
    g_idx = g_idx[grouped_desc_order(g_kfo, gt_score[g_idx])]
    # detections: only on (non-excluded) GT keyframes, in the GT keyframes' order
    u, first = np.unique(gt_kf[g_idx], return_index=True)
    rank_u = np.empty(u.size, np.int64)
    rank_u[np.argsort(first, kind="stable")] = np.arange(u.size)
    d_idx = np.flatnonzero(member(det_class, class_ids) & np.isin(det_kf, u))
    d_ord = rank_u[np.searchsorted(u, det_kf[d_idx])]
    d_idx = d_idx[grouped_desc_order(d_ord, det_score[d_idx])]
    f32 = lambda a: a.astype(np.float32)  # noqa: E731  (tpfp_single builds float32 arrays)
    db = f32(det_box[d_idx])
    bad = (db[:, 0] > db[:, 2]) | (db[:, 1] > db[:, 3])
    if bad.any():  # its BoxList raises on them; there is no number to reproduce
        raise ProtocolInputError(f"mmaction2 protocol: {int(bad.sum())} detection(s) on evaluated keyframes have "
                                 "x2 < x1 or y2 < y1, which MMAction2's evaluator refuses (use --protocol official)")
    # classes in the order `scores` (a dict filled per keyframe from list(set(labels))) first sees them
    order, seen = [], set()
    kf_codes = det_kf[d_idx]
    if d_idx.size:
        cls_d = det_class[d_idx]
        brk = np.flatnonzero(kf_codes[1:] != kf_codes[:-1]) + 1
        for part in np.split(cls_d, brk):
            for c in list(set(part.tolist())):
                if c not in seen:
                    seen.add(c), order.append(c)
    res = _score(gt_kf[g_idx], f32(gt_box[g_idx]), gt_class[g_idx], kf_codes, db,
                 det_class[d_idx], f32(det_score[d_idx]), class_ids, thr, keep_curves, num_gt,
                 class_order=[int(np.searchsorted(class_ids, c)) for c in order])
    present = np.zeros(C, dtype=bool)
    present[[int(np.searchsorted(class_ids, c)) for c in order]] = True
    res["ap"] = np.where(present, res["ap"], np.nan)  # classes without detections: not reported
    return res


_RUNNERS = {"official": _official, "pyslowfast": _pyslowfast, "mmaction2": _mmaction2}
