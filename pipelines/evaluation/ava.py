"""AVA frame-mAP: the official ActivityNet evaluator's numbers bit for bit, and PySlowFast's and MMAction2's.

The protocols live in `pipelines/evaluation/` (`protocols.py` says what each does, `heap_order.py`
how the official 50-detection heap is reproduced, `core.py` the shared matching and VOC AP); the
table of differences is docs/EVALUATION.md. This module keeps the public names (`frame_map`,
`EvalResult`, `evaluate_files`, `class_groups`, ...) and the `evaluate` command logic.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract import ava_io
from stagecache.extract.formats.csv_table import load_csv
from stagecache.pipelines.evaluation.ava_inputs import (GroupsFileError, check_gt_in_unit_square, check_label_map_share,
                                                        read_groups_file, refuse_inverted_predictions)
from stagecache.pipelines.evaluation.core import member
from stagecache.pipelines.evaluation.heap_order import HeapChunk, official_heap
from stagecache.pipelines.evaluation.protocols import PROTOCOLS, frame_map_arrays, official_from_kept
from stagecache.pipelines.evaluation.runs import table_runs

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_LABEL_MAP = DATA_DIR / "ava_action_list_60.pbtxt"
GROUPS_FILE = DATA_DIR / "ava_class_groups.json"


@dataclass
class EvalResult:
    map: float
    per_class: dict[int, float]  # label id -> AP (NaN: no GT)
    class_names: dict[int, str] = field(default_factory=dict)
    num_gt: dict[int, int] = field(default_factory=dict)
    num_det: dict[int, int] = field(default_factory=dict)
    # label id -> (precision (D,), recall (D,)) in ranking order, for PR plots
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    # rows skipped because their class is not in the label map: {"gt": n, "pred": n}
    skipped: dict[str, int] = field(default_factory=dict)

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

def frame_map(gt_kf, gt_box, gt_class, det_kf, det_box, det_class, det_score, *, class_ids,
              excluded_kf=None, max_dets_per_kf: int | None = 50, iou_threshold: float = 0.5,
              class_names: dict[int, str] | None = None, keep_curves: bool = False, protocol: str = "official",
              gt_score=None) -> EvalResult:
    """Frame-mAP over flattened (box, class) rows given in file order; `*_kf` are integer keyframe keys.

    Boxes are x1, y1, x2, y2 (float64 for the exact official numbers). `protocol`: one of
    `PROTOCOLS` (official, pyslowfast, mmaction2). `max_dets_per_kf` is the official heap's capacity
    (None: no cap); the other protocols have no cap and ignore it. `gt_score`: the 8th GT column as
    parsed (person_id), which the official and MMAction2 readers sort GT rows by; None = 1.0.
    """
    out = frame_map_arrays(gt_kf, gt_box, gt_class, det_kf, det_box, det_class, det_score, class_ids=class_ids,
                           excluded_kf=excluded_kf, protocol=protocol, max_dets_per_kf=max_dets_per_kf,
                           iou_threshold=iou_threshold, gt_score=gt_score, keep_curves=keep_curves)
    return _result(out, class_names or {})


def _result(out: dict, names: dict[int, str]) -> EvalResult:
    ids = [int(c) for c in out["class_ids"]]
    return EvalResult(out["map"], {c: float(a) for c, a in zip(ids, out["ap"])}, {c: names.get(c, "") for c in ids},
                      {c: int(n) for c, n in zip(ids, out["num_gt"])}, {c: int(n) for c, n in zip(ids, out["num_det"])},
                      out["curves"])


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

def _run_keys(run_codes: np.ndarray, run_ts: np.ndarray, source, remap: np.ndarray) -> np.ndarray:
    """int64 keyframe keys of runs: video index (shared sorted vocabulary) << 32 | timestamp milliseconds."""
    if run_codes.size == 0:
        return np.zeros(0, np.int64)
    tk = ava_io.timestamp_keys(run_ts)
    if tk.min() < 0 or tk.max() >= 1 << 32:
        raise ava_io.AvaFormatError(source, None, "timestamps must lie in [0, 4.29e6) seconds")
    return remap[run_codes].astype(np.int64) * (1 << 32) + tk  # remap: codes -> shared vocabulary


def _heap_chunks(pr):
    """The predictions table's chunks as heap input (views of the reader's buffers)."""
    for c, (cls, score) in enumerate(zip(pr.parts(6), pr.parts(7))):
        yield HeapChunk(int(pr.offsets[c]), cls, score, *(pr.parts(j)[c] for j in range(2, 6)))


def check_single_label(kf: np.ndarray, box: np.ndarray, path, line) -> None:
    """Each (keyframe, box) of a single-label GT file has one label; else an error naming the line."""
    rows = np.column_stack([kf.astype(np.float64), box.astype(np.float64)])
    _, inv, cnt = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(cnt[inv.ravel()] > 1)
    if multi.size:
        raise ava_io.AvaFormatError(path, line(int(multi[0])), "--single-label but this box has several labels")


def _warn_spaced_ids(tables) -> None:
    """One warning for the rows whose video id has spaces around it. The tables keep ids as written
    (`read_*_table`), so ` v1` is another video than `v1`, as in the three reference evaluators."""
    count, first = 0, None
    for t in tables:
        if t is None or not len(t):
            continue
        names = np.asarray(t.video_names, dtype=str)
        spaced = np.flatnonzero(names != np.char.strip(names))  # a few distinct ids: the usual file has none
        if spaced.size:
            rows = np.flatnonzero(np.isin(t.video_codes, spaced))
            count += rows.size
            first = first or f"{t.path}:{t.line(int(rows[0]))}"
    if count:
        warnings.warn(f"{count} row(s) have spaces around the video id (first: {first}); each is scored as another "
                      "video than the id without them, as the reference evaluators do", stacklevel=3)


def evaluate_files(gt_csv, pred_csv, label_map_path=DEFAULT_LABEL_MAP, excluded_csv=None,
                   max_dets_per_kf: int | None = 50, iou_threshold: float = 0.5, single_label: bool = False,
                   keep_curves: bool = False, protocol: str = "official") -> EvalResult:
    """Frame-mAP of an AVA predictions CSV against a GT CSV under `protocol` (official by default).

    Values are used as parsed (float64, no clipping) and video ids as written (` v1` is another video
    than `v1`; one warning with the number of such rows and the first file:line), as the reference
    evaluators do. Rows of classes outside
    the label map are skipped and counted in `EvalResult.skipped`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    lm = ava_io.read_label_map(label_map_path)
    if os.path.exists(pred_csv) and os.path.exists(gt_csv) and os.path.samefile(gt_csv, pred_csv):
        raise ava_io.AvaFormatError(pred_csv, None, "the predictions file is the ground-truth file")
    gt = ava_io.read_annotations_table(gt_csv)
    pr = ava_io.read_predictions_table(pred_csv)
    ex = load_csv(excluded_csv, (2,), ("video", "timestamp"), strip_ids=False) if excluded_csv else None
    _warn_spaced_ids([gt, pr, ex])
    if ex is not None:
        ex.check_finite(("video", "timestamp"))
    tables = [t for t in (gt, pr, ex) if t is not None]
    _, inv = np.unique(np.concatenate([t.video_names for t in tables]), return_inverse=True)
    runs, a = [], 0  # per table: run starts (R + 1,) and run keys (R,)
    for t in tables:
        remap = inv.ravel()[a:a + t.video_names.size]
        a += t.video_names.size
        st = table_runs(t.code_parts, t.parts(1), t.offsets)
        runs.append((st, _run_keys(t.take_codes(st[:-1]), t.take(1, st[:-1]), t.path, remap)))
    (g_starts, g_run_keys), (p_starts, p_run_keys) = runs[:2]
    gt_keys = np.repeat(g_run_keys, np.diff(g_starts))
    ex_keys = np.repeat(runs[2][1], np.diff(runs[2][0])) if ex is not None else None
    ids = np.asarray(lm.ids, np.int64)
    g_act = gt.int_col(6, "action_id")  # converted by the reader already
    g_in = member(g_act, ids)
    # ids parsed as floats ("12.0") were checked integral by the reader
    p_in = (np.concatenate([member(part.astype(np.int64, copy=False), ids) for part in pr.parts(6)]) if len(pr)
            else np.zeros(0, dtype=bool))
    if len(gt) == 0:
        raise ava_io.AvaFormatError(gt_csv, None, "the ground truth is empty: nothing to evaluate")
    check_label_map_share(gt_csv, label_map_path, g_act, g_in, len(lm.ids))
    check_gt_in_unit_square(gt)
    refuse_inverted_predictions(pr)
    live = g_in & ~np.isin(gt_keys, ex_keys) if ex is not None else g_in
    if not live.any():
        raise ava_io.AvaFormatError(gt_csv, None, "the ground truth has no rows left after the excluded keyframes: "
                                                  "nothing to evaluate")
    if single_label:
        check_single_label(gt_keys, gt.box(), gt_csv, gt.line)
    gt_score = np.where(gt.ncol == 8, gt.col(7), 1.0)
    names = dict(zip(lm.ids, lm.names))
    cap = max_dets_per_kf
    if protocol == "official" and np.unique(p_run_keys).size == p_run_keys.size:
        # each keyframe's rows contiguous (a model's output file): the heap reads the reader's chunks
        # one after the other, no column is joined, and only the kept rows come out
        kept = official_heap(_heap_chunks(pr), p_starts, ids, ~np.isin(p_run_keys, ex_keys) if ex is not None else None,
                             int(cap or 0))
        out = official_from_kept(kept, p_run_keys, gt_keys, gt.box(), g_act, gt_score, class_ids=ids,
                                 ex=ex_keys if ex is not None else np.zeros(0, np.int64), thr=iou_threshold,
                                 keep_curves=keep_curves)
        out["class_ids"] = ids
        res = _result(out, names)
    else:
        res = frame_map(gt_keys, gt.box(), g_act, np.repeat(p_run_keys, np.diff(p_starts)), pr.box(),
                        pr.int_col(6, "action_id"), pr.col(7), class_ids=lm.ids, excluded_kf=ex_keys,
                        max_dets_per_kf=cap, iou_threshold=iou_threshold, class_names=names,
                        keep_curves=keep_curves, protocol=protocol, gt_score=gt_score)
    res.skipped = {"gt": int((~g_in).sum()), "pred": int((~p_in).sum())}
    return res


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
    ids = set(label_map.ids)
    return {g: [i for i in v if i in ids] for g, v in read_groups_file(groups_json).items()}


def plot_pr_curves(result: EvalResult, out_dir, by: str = "class", groups: dict[str, list[int]] | None = None) -> list[str]:
    """PNG precision/recall curves: one file per class (`by="class"`) or per group (curves overlaid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if by not in ("class", "group"):
        raise ValueError(f"plot by {by!r}; valid: ['class', 'group']")
    if by == "group" and not groups:
        raise GroupsFileError("--plot-by group needs class groups: give --groups FILE (the AVA grouping is "
                              "built in only for the AVA label map)")
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
        if by == "class":  # the class's name, not only its file's number
            c = ids[0]
            ap = result.per_class.get(c, float("nan"))
            ax.set_title(f"class {c}: {result.class_names.get(c) or '(no name)'}"
                         + ("" if math.isnan(ap) else f"  (AP {ap:.3f})"), fontsize=9)
        else:
            ax.set_title(f"group {fname.split('_', 1)[1]}", fontsize=9)
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
    protocol: str | None = None  # None: official (the command shares --protocol with the tube datasets)

    def __post_init__(self):
        for name in ("gt", "pred", "label_map", "excluded", "groups"):
            p = getattr(self, name)
            if p is not None and not os.path.isfile(p):
                raise ValueError(f"--{name.replace('_', '-')}: file not found: {p}")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"--iou must be in (0, 1], got {self.iou}")
        if self.plot_by not in ("class", "group"):
            raise ValueError(f"--plot-by must be 'class' or 'group', got {self.plot_by!r}")
        self.protocol = self.protocol or "official"
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol != "official" and (self.no_cap or self.single_label):
            raise ValueError(f"--no-cap / --single-label apply to the official protocol ({self.protocol} has no cap)")


def run_evaluate(args: EvaluateArgs, echo=print) -> EvalResult:
    lm = ava_io.read_label_map(args.label_map)
    if args.groups:  # a bad groups file is an error before the evaluation, not a table without groups
        groups = class_groups(lm, args.groups)
    else:
        try:
            groups = class_groups(lm)
        except ValueError:
            groups = {}  # not AVA and no groups file: no grouped mAP
    if args.plots and args.plot_by == "group" and not groups:
        raise GroupsFileError(f"--plot-by group needs class groups: the label map {args.label_map} is not the AVA "
                              "list, give --groups FILE")
    cap = None if (args.no_cap or args.single_label) else 50
    res = evaluate_files(args.gt, args.pred, args.label_map, args.excluded, max_dets_per_kf=cap,
                         iou_threshold=args.iou, single_label=args.single_label, keep_curves=bool(args.plots),
                         protocol=args.protocol)
    echo(f"frame-mAP@{args.iou:g} ({args.protocol} protocol): {res.map:.4f}")
    if res.skipped.get("gt") or res.skipped.get("pred"):
        echo(f"skipped rows of classes outside the label map: {res.skipped['gt']} GT, {res.skipped['pred']} predictions")
    for g, v in res.group_map(groups).items():
        echo(f"  {g:<14} mAP: {v:.4f}")
    echo(res.table())
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with atomic_open(args.json_path) as f:  # a kill mid-write leaves the previous file whole
            json.dump(res.to_json(groups), f, indent=2)
        with atomic_open(os.path.join(os.path.dirname(os.path.abspath(args.json_path)), "evaluate_config.json")) as f:
            json.dump(asdict(args), f, indent=2)
    if args.plots:
        plot_pr_curves(res, args.plots, by=args.plot_by, groups=groups)
    return res
