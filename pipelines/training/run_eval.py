"""A head over a split: its outputs for every query actor (`run_head`), those outputs as AVA
detections (`detections`), and the frame-mAP of a run's validation (`evaluate_head`, with the
classes, ground truth and groups it is scored on)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import (TUBE_DATASETS, TubeFormatError, TubeGT, parse_split,
                                                   read_tube_pickle, timestamp_frame)
from stagecache.pipelines.training import losses
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP, EvalResult, class_groups, frame_map
from stagecache.pipelines.evaluation.multisports import evaluate_multisports
from stagecache.pipelines.evaluation.tubes import DEFAULT_TUBE_PROTOCOL, tube_frame_map
from stagecache.pipelines.training.steps import LossContext, SplitContext


@torch.no_grad()
def run_head(head, split: SplitContext, queries: torch.Tensor | None = None, *, batch_size: int = 64,
             progress: bool = False, desc: str = "predict", fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every actor of the query keyframes (default: every keyframe with a selected
    actor), or `fn(x)` (e.g. `head.first_order_maps`) in their place. Returns (rows into the
    split's graph, outputs (N, ...)) on CPU. Only the batches' tensors are read, never the graph's
    features: a streamed split runs the same way."""
    head.eval()
    g, device = split.graph, split.device
    queries = g.query_keyframes() if queries is None else queries
    fn = head if fn is None else fn
    rows_out, logits_out = [], []
    # Batches from the split's source (resident or streamed: the same batches either way).
    batches = list(queries.cpu().split(batch_size))
    for b in tqdm(split.feed.batches(batches, split.radius, device=device), total=len(batches), desc=desc,
                  disable=not progress, leave=False):
        x, rows = b.x, b.rows
        with torch.autocast(device.type, enabled=split.amp and device.type == "cuda"):
            logits = fn(x)
        rows_out.append(rows[x.is_query.to(rows.device)].cpu())
        logits_out.append(logits[x.is_query].float().cpu())
    return torch.cat(rows_out), torch.cat(logits_out)


def detections(split: SplitContext, rows: torch.Tensor, score: np.ndarray, class_ids: list[int],
               cols: list[int]) -> dict[str, np.ndarray]:
    """Flattened (keyframe, box, class id, score) rows: the columns `cols` of the per-actor scores
    `score` (N, L) of the graph rows `rows`, as the classes `class_ids`."""
    g, r = split.graph, rows.numpy()
    kf = g.actor_kf().cpu().numpy()[r]
    box = g.actor_box.cpu().numpy()[r]
    return {
        "kf": np.repeat(kf, len(cols)),
        "box": np.repeat(box, len(cols), axis=0),
        "class": np.tile(np.asarray(class_ids), len(r)),
        "score": score[:, cols].reshape(-1),
    }


def det_predictions(det: dict, tables) -> ava_io.Predictions:
    """Flattened detections (`detections`) of a split's `tables` as AVA prediction rows, float32 boxes
    and scores: what a predictions CSV holds and reads back."""
    kf = det["kf"]
    return ava_io.Predictions(
        video=np.asarray(tables.video_names, dtype=object)[tables.kf_video.numpy()[kf]],
        timestamp=tables.kf_time.numpy()[kf],
        box=det["box"].astype(np.float32),
        action=det["class"].astype(np.int64),
        score=det["score"].astype(np.float32),
    )


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


@dataclass(frozen=True)
class TubeTarget:
    """A JHMDB-21 / UCF101-24 / MultiSports val store scored as `evaluate --dataset` scores its
    predictions CSV (frame-mAP; `protocol`: moc / act, or multisports for MultiSports' stores)."""

    gt: TubeGT
    split: int
    fps: float
    frame_stride: int
    protocol: str = DEFAULT_TUBE_PROTOCOL


def is_tube_store(store) -> bool:
    """A store `extract features --dataset jhmdb|ucf24` (or the synthetic tube data) wrote: split
    train<N> / test<N> and, in its base attrs, a .pkl annotations file or a tube dataset name."""
    base = store.groups.get("base", {})
    try:
        parse_split(str(store.attrs.get("split", "")))
    except TubeFormatError:
        return False
    return str(base.get("annotations") or "").endswith(".pkl") or base.get("dataset") in TUBE_DATASETS


def tube_target(store, tables, gt_path: str) -> TubeTarget:
    """The pickle, split, fps and keyframe stride of a tube val store (the stride: the gcd of its
    keyframes' frame numbers - 1, which is extraction's --frame-stride on real data)."""
    side, split = parse_split(str(store.attrs.get("split")))
    if side != "test":
        raise TubeFormatError(f"{gt_path}: the val store is split {store.attrs.get('split')}; evaluate --dataset "
                              "scores a test<N> split")
    gt = read_tube_pickle(gt_path)
    base = store.groups.get("base", {})
    fps = float(base.get("fps") or next(s.fps for s in TUBE_DATASETS.values() if s.splits == len(gt.test_videos)))
    frames = timestamp_frame(tables.kf_time.numpy(), fps)
    stride = int(np.gcd.reduce(frames - 1)) if len(frames) else 1
    # MultiSports' own frame-mAP (VOC AP, its matching: pipelines/evaluation/multisports.py) for its stores.
    protocol = "multisports" if base.get("dataset") == "multisports" else DEFAULT_TUBE_PROTOCOL
    return TubeTarget(gt, split, fps, max(stride, 1), protocol)


def tube_metric_note(target: TubeTarget | None, tube_store: bool) -> str:
    """What the val mAP of a run is, said once in its output."""
    if target is not None:
        return (f"val mAP = evaluate --dataset's frame-mAP on val_predictions.csv (protocol {target.protocol}, "
                f"split {target.split}, fps {target.fps:g}, --frame-stride {target.frame_stride})")
    if tube_store:
        return ("val mAP = AVA official frame-mAP on the store's GT rows (IoU without +1 px, 50 per keyframe, VOC AP); "
                "evaluate --dataset gives another number (ACT/MOC: pixel +1 IoU, per-frame NMS, trapezoid AP, "
                "the pickle's boxes): give --tube-gt <GT pickle> to report that one")
    return ""


@dataclass(frozen=True)
class EvalContext:
    """What a validation is scored against: the ground truth (`gt_for_eval`), the store's label ids
    (the head's output columns), the ids reported, the per-keyframe detection cap and the batch size."""

    gt: dict[str, np.ndarray]
    label_ids: list[int]
    eval_ids: list[int]
    max_dets_per_kf: int | None
    batch_size: int
    tube: TubeTarget | None = None  # a tube dataset's val store: scored as evaluate --dataset
    # (E,) val keyframe indices scored as evaluate --excluded does (pipelines/training/val_exclusions.py)
    excluded_kf: np.ndarray | None = None


def evaluate_head(head, split: SplitContext, loss: LossContext, ev: EvalContext):
    """Val frame-mAP of a head, plus the predictions (for the CSV)."""
    rows, logits = run_head(head, split, batch_size=ev.batch_size)
    score = losses.scores(logits, loss.loss, loss.pose_cols.cpu()).numpy()  # (N, L)
    cols = [ev.label_ids.index(i) for i in ev.eval_ids]
    det = detections(split, rows, score, ev.eval_ids, cols)
    if ev.tube is not None:
        return tube_result(ev, split.tables, det), det
    gt = ev.gt
    keep = np.isin(gt["class"], ev.eval_ids)
    result = frame_map(
        gt["kf"][keep], gt["box"][keep], gt["class"][keep],
        det["kf"], det["box"], det["class"], det["score"],
        class_ids=ev.eval_ids, max_dets_per_kf=ev.max_dets_per_kf, excluded_kf=ev.excluded_kf,
    )
    return result, det


def tube_result(ev: EvalContext, tables, det: dict) -> EvalResult:
    """evaluate --dataset's per-class frame AP of the rows `write_predictions_csv` writes
    (`det_predictions`: the CSV reads back to the same values)."""
    t = ev.tube
    pred = det_predictions(det, tables)
    if t.protocol == "multisports":
        ap = evaluate_multisports(t.gt, pred, fps=t.fps, source="val predictions", video_ious=(), all_ious=False,
                                  frame_stride=t.frame_stride).frame_ap
    else:
        ap = tube_frame_map(t.gt, t.split, pred, fps=t.fps, source="val predictions", protocol=t.protocol,
                            frame_stride=t.frame_stride)
    per = {i: float(ap[i - 1]) for i in ev.eval_ids}
    vals = [v for v in per.values() if not np.isnan(v)]
    return EvalResult(map=float(np.mean(vals)) if vals else float("nan"), per_class=per)
