"""The excluded timestamps a run's validation is scored without, as `evaluate --excluded` scores them.

AVA's val set has keyframes whose annotations are incomplete (`ava_val_excluded_timestamps_v2.2.csv`);
the official evaluator drops their ground truth and every detection on them. A run's validation
(the printed val mAP, best.pt's epoch, per_class_ap.json) gives those keyframes to `frame_map` as
`excluded_kf`, the same rule `evaluate --excluded` applies (pipelines/evaluation/protocols.py), so
the run's number is the one `evaluate` prints for its val_predictions.csv with the same file.

Where they come from: `train-head --excluded FILE`, else the val store's base group attributes
`excluded_file` / `excluded_timestamps` (written by `extract features --excluded`: a list of
`[video_id, timestamp]` pairs, AVA's whole seconds; an empty list: none). The option wins over the
store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stagecache.core.timekeys import timestamp_key, timestamp_keys
from stagecache.extract import ava_io

STORE_FILE_ATTR = "excluded_file"  # the val store's base group attributes (extract features --excluded)
STORE_PAIRS_ATTR = "excluded_timestamps"


@dataclass(frozen=True)
class ValExclusions:
    """Excluded (video, timestamp key) pairs, where they came from, and the val keyframes they hit."""

    file: str
    source: str  # "option" (train-head --excluded) or "store" (the val store's base attributes)
    pairs: frozenset  # {(video, timestamp key in ms)}
    keyframes: np.ndarray  # (E,) int64 indices of the val split's keyframes that are excluded

    def to_json(self) -> dict:
        """What config.json records (`excluded`)."""
        return {"file": self.file, "source": self.source, "count": len(self.pairs),
                "val_keyframes": int(self.keyframes.size)}


def excluded_keyframes(tables, pairs) -> np.ndarray:
    """(E,) indices of the keyframes of a split's `tables` (extract.store.Tables) whose (video,
    timestamp key) is one of `pairs`; a keyframe is the same one when its integer milliseconds agree."""
    if not pairs:
        return np.zeros(0, np.int64)
    names = np.asarray(tables.video_names, dtype=object)[tables.kf_video.numpy()]
    keys = timestamp_keys(tables.kf_time.numpy())
    hit = [i for i, (v, k) in enumerate(zip(names.tolist(), keys.tolist())) if (v, k) in pairs]
    return np.asarray(hit, np.int64)


def val_exclusions(option: str | None, store, tables) -> ValExclusions | None:
    """The exclusions of a run's validation: `--excluded FILE` (read with `ava_io.read_excluded`, the
    reader of the excluded-timestamps format), else those the val store recorded at extraction, else
    None."""
    if option:
        pairs, file, source = ava_io.read_excluded(option), str(option), "option"
    else:
        base = store.groups.get("base", {})
        stored = base.get(STORE_PAIRS_ATTR)
        if not stored:  # not recorded, or extracted without --excluded
            return None
        pairs, file, source = {(str(v), timestamp_key(t)) for v, t in stored}, str(base.get(STORE_FILE_ATTR) or ""), "store"
    pairs = frozenset(pairs)
    return ValExclusions(file, source, pairs, excluded_keyframes(tables, pairs))
