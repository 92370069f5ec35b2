"""Per-keyframe actor and object rows of the store's `base` group, from AVA-format files.

Actor rows of a keyframe: the ground-truth people first (one row per distinct (person, box); the
CSV's one-row-per-action becomes a multi-hot label vector, score 1.0, track = person_id), then the
proposals in file order with their raw detector scores (nothing is thresholded here unless asked:
thresholds are a training-time choice), track -1.

Label transfer (`transfer_labels`): a proposal whose best IoU with a GT box of the same keyframe is
>= `label_iou` gets that GT box's labels. Papers' settings, applied at training time by score:
  SlowFast / LFB (PySlowFast AVA configs): train on GT + proposals with score >= 0.9, labels copied
  at IoU >= 0.9; evaluate on proposals with score >= 0.8.
  STAGE (I3D setting): IoU 0.5, score 0.7.
The default here is IoU 0.9 (SlowFast/LFB); scores are stored raw so any score threshold works later.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from stagecache.extract import ava_io
from stagecache.core.boxes import box_iou


@dataclass
class KeyframeRows:
    """The rows of one video, keyframes in ascending time order."""

    timestamps: np.ndarray  # (K,) float64
    actor_counts: np.ndarray  # (K,) int64
    object_counts: np.ndarray  # (K,) int64
    arrays: dict[str, np.ndarray]  # base arrays: actor_* (A, ...) and object_* (O, ...)

    def select(self, keep: np.ndarray) -> "KeyframeRows":
        """Keep the keyframes where `keep` (K,) bool is true."""
        ao = np.concatenate([[0], np.cumsum(self.actor_counts)])
        oo = np.concatenate([[0], np.cumsum(self.object_counts)])
        a_idx = np.concatenate([np.arange(ao[k], ao[k + 1]) for k in np.flatnonzero(keep)] or [np.zeros(0, int)])
        o_idx = np.concatenate([np.arange(oo[k], oo[k + 1]) for k in np.flatnonzero(keep)] or [np.zeros(0, int)])
        arrays = {n: (a[a_idx] if n.startswith("actor_") else a[o_idx]) for n, a in self.arrays.items()}
        return KeyframeRows(self.timestamps[keep], self.actor_counts[keep], self.object_counts[keep], arrays)

    def actor_slices(self) -> list[slice]:
        ao = np.concatenate([[0], np.cumsum(self.actor_counts)])
        return [slice(int(ao[k]), int(ao[k + 1])) for k in range(len(self.timestamps))]


def _by_keyframe(video: np.ndarray, ts: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """video -> timestamp key -> row indices (file order)."""
    out: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (v, k) in enumerate(zip(video, ava_io.timestamp_keys(ts))):
        out[str(v)][int(k)].append(i)
    return {v: {k: np.asarray(ix) for k, ix in d.items()} for v, d in out.items()}


class RowBuilder:
    """Builds `KeyframeRows` per video from annotations, proposals and precomputed objects."""

    def __init__(self, *, label_ids: list[int], annotations: ava_io.Annotations | None = None,
                 proposals: ava_io.Proposals | None = None, objects: ava_io.Objects | None = None,
                 min_proposal_score: float = 0.0, transfer_labels: bool = True, label_iou: float = 0.9):
        self.label_col = {int(i): j for j, i in enumerate(label_ids)}
        self.n_labels = len(label_ids)
        self.ann, self.props, self.objs = annotations, proposals, objects
        self.min_score, self.transfer, self.label_iou = min_proposal_score, transfer_labels, label_iou
        self._ann = _by_keyframe(annotations.video, annotations.timestamp) if annotations is not None else {}
        self._prop = _by_keyframe(proposals.video, proposals.timestamp) if proposals is not None else {}
        self._obj = _by_keyframe(objects.video, objects.timestamp) if objects is not None else {}

    def videos(self) -> set[str]:
        return set(self._ann) | set(self._prop)

    def timestamps(self, video: str) -> dict[int, float]:
        """Keyframe key -> seconds, for every keyframe with a GT or proposal row."""
        out = {}
        for table, idx in ((self.ann, self._ann), (self.props, self._prop)):
            for k, rows in idx.get(video, {}).items():
                out[k] = float(table.timestamp[rows[0]])
        return out

    def gt_rows(self, video: str, key: int):
        """(box (G, 4), multi-hot labels (G, L), person ids (G,)) of the GT people of a keyframe."""
        rows = self._ann.get(video, {}).get(key)
        if rows is None:
            return np.zeros((0, 4), np.float32), np.zeros((0, self.n_labels), np.uint8), np.zeros(0, np.int64)
        groups: dict[tuple, int] = {}
        boxes, labels, tracks = [], [], []
        for i in rows:
            box = self.ann.box[i]
            person = int(self.ann.person[i])
            g = (person, *np.round(box, 6).tolist())
            if g not in groups:
                groups[g] = len(boxes)
                boxes.append(box)
                labels.append(np.zeros(self.n_labels, np.uint8))
                tracks.append(person)
            a = int(self.ann.action[i])
            if a >= 0:  # -1: a box without a label (AVA test-style rows)
                if a not in self.label_col:
                    continue  # actions outside the label map (e.g. the 80 -> 60 reduction)
                labels[groups[g]][self.label_col[a]] = 1
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.uint8).reshape(-1, self.n_labels), \
            np.asarray(tracks, np.int64)

    def actors_from_detections(self, gt_box, gt_labels, gt_track, box: np.ndarray, score: np.ndarray) -> dict:
        """Actor arrays from GT rows + proposal boxes/scores (label transfer applied)."""
        keep = score >= self.min_score
        box, score = box[keep].astype(np.float32), score[keep].astype(np.float32)
        labels = np.zeros((len(box), self.n_labels), np.uint8)
        if self.transfer and len(box) and len(gt_box):
            iou = box_iou(box, gt_box, dtype=np.float32)  # float32 arithmetic, as before
            best = iou.argmax(1)
            hit = iou[np.arange(len(box)), best] >= self.label_iou
            labels[hit] = gt_labels[best[hit]]
        return {
            "actor_box": np.concatenate([gt_box, box]).astype(np.float32),
            "actor_score": np.concatenate([np.ones(len(gt_box), np.float32), score]),
            "actor_is_gt": np.concatenate([np.ones(len(gt_box), bool), np.zeros(len(box), bool)]),
            "actor_labels": np.concatenate([gt_labels, labels]),
            "actor_track": np.concatenate([gt_track, -np.ones(len(box), np.int64)]),
        }

    def proposal_rows(self, video: str, key: int) -> tuple[np.ndarray, np.ndarray]:
        """(box (P, 4), score (P,)) of the proposals file at one keyframe, in file order."""
        rows = self._prop.get(video, {}).get(key, np.zeros(0, int))
        if not len(rows):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return self.props.box[rows], self.props.score[rows]

    def build(self, video: str, detections: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
              objects: dict[int, dict[str, np.ndarray]] | None = None,
              keys: list[int] | None = None) -> KeyframeRows:
        """Rows of `video`. `detections` (key -> (box, score)) replaces the proposals file when a
        person detector runs; `objects` (key -> object arrays) replaces the objects file."""
        stamps = self.timestamps(video)
        if keys is None:
            keys = sorted(stamps)
        per_kf = []
        for k in keys:
            gt_box, gt_labels, gt_track = self.gt_rows(video, k)
            if detections is not None:
                box, score = detections.get(k, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
            else:
                box, score = self.proposal_rows(video, k)
            act = self.actors_from_detections(gt_box, gt_labels, gt_track, box, score)
            if objects is not None:
                obj = objects.get(k, {})  # keyframes the detector never saw (outside the video)
            else:
                rows = self._obj.get(video, {}).get(k, np.zeros(0, int))
                obj = {"object_box": self.objs.box[rows] if len(rows) else np.zeros((0, 4), np.float32),
                       "object_class": self.objs.class_id[rows] if len(rows) else np.zeros(0, np.int64),
                       "object_score": self.objs.score[rows] if len(rows) else np.zeros(0, np.float32)}
            per_kf.append((act, obj))
        names_a = ["actor_box", "actor_score", "actor_is_gt", "actor_labels", "actor_track"]
        names_o = sorted({n for _, o in per_kf for n in o}) or ["object_box", "object_class", "object_score"]
        empty = {"actor_box": (0, 4), "actor_labels": (0, self.n_labels), "object_box": (0, 4)}
        arrays = {}
        for n in names_a:
            parts = [a[n] for a, _ in per_kf]
            arrays[n] = np.concatenate(parts) if parts else np.zeros(empty.get(n, (0,)))
        for n in names_o:
            like = next((o[n] for _, o in per_kf if n in o), np.zeros(empty.get(n, (0,))))
            parts = [o.get(n, np.zeros((0,) + like.shape[1:], like.dtype)) for _, o in per_kf]
            arrays[n] = np.concatenate(parts) if parts else np.zeros(empty.get(n, (0,)))
        ts = np.array([stamps.get(k, k / 1000.0) for k in keys], np.float64)
        return KeyframeRows(ts, np.array([len(a["actor_box"]) for a, _ in per_kf], np.int64),
                            np.array([len(o.get("object_box", ())) for _, o in per_kf], np.int64), arrays)


def rows_from_tables(tables, video: str) -> KeyframeRows:
    """The base rows of one video read back from a store (`Tables` with base/* loaded)."""
    import torch

    vi = tables.video_names.index(video)
    kf = torch.nonzero(tables.kf_video == vi).flatten()
    k0, k1 = int(kf[0]), int(kf[-1]) + 1
    a0, a1 = int(tables.kf_actor_offset[k0]), int(tables.kf_actor_offset[k1])
    o0, o1 = int(tables.kf_object_offset[k0]), int(tables.kf_object_offset[k1])
    arrays = {}
    for name, t in tables.data.items():
        g, n = name.split("/", 1)
        if g != "base":
            continue
        arrays[n] = t[a0:a1].numpy() if n.startswith("actor_") else t[o0:o1].numpy()
    return KeyframeRows(tables.kf_time[k0:k1].numpy().astype(np.float64),
                        np.diff(tables.kf_actor_offset[k0:k1 + 1].numpy()).astype(np.int64),
                        np.diff(tables.kf_object_offset[k0:k1 + 1].numpy()).astype(np.int64), arrays)
