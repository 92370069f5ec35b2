"""AVA-Kinetics (Li et al. 2020): AVA's 80 classes on Kinetics-700 clips, one keyframe per clip,
as `extract features --dataset ava-kinetics` inputs.

Files (the release `ava_kinetics_v1_0.tar.gz` and MMAction2's `tools/data/ava_kinetics`):
  --annotations           AVA's CSV (ava_{train,val}_v2.2.csv: video, timestamp, box, action, person)
  --kinetics-annotations  kinetics_{train,val}_v1.0.csv: the same columns without the person id, the
                          video a YouTube id and the timestamp that video's own second; MMAction2's
                          `kinetics_train.csv` (video = the clip's path, person -1) is read too: the
                          path's file name gives the YouTube id
  --videos                one folder holding the AVA videos (or frame folders) and the Kinetics clips
                          `<youtube_id>_<start:06d>_<end:06d>.mp4` (or a frame folder of that name,
                          frames at --fps): clip time = timestamp - start (`video.find_videos`)
  --proposals             MMAction2's merged pickle {"<video>,<second:04d>": (n, 5)}: AVA and Kinetics
                          keys alike, read as AVA's (`formats.proposals`)
One store video per clip, keyed by the YouTube id, as AVA's (the evaluator's GT CSV names them so).
`--subset ava|kinetics|all` keeps the rows of one file or both (validate on AVA alone: a val store
of `--subset ava`; train-head needs nothing else). Clips missing from --videos (Kinetics videos
taken down: a known gap of this dataset) are skipped, counted and listed in
`<store>.<group>.failed.txt` with the unreadable ones.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_write_bytes
from stagecache.core.errors import UserError
from stagecache.core.timekeys import timestamp_keys
from stagecache.extract import ava_io

SUBSETS = ("all", "ava", "kinetics")
_CLIP = re.compile(r"^(?P<id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")


class AvaKineticsError(UserError, ValueError):
    """AVA-Kinetics inputs that do not fit together; the message names the file and row."""


def clip_span(path: str | Path) -> tuple[str, float, float] | None:
    """`.../<id>_<start>_<end>[.ext]` -> (id, start, end) seconds; None for another name."""
    p = Path(str(path))
    m = _CLIP.match(p.stem if p.suffix.lower() in (".mp4", ".mkv", ".webm", ".avi") else p.name)
    return (m.group("id"), float(int(m.group("start"))), float(int(m.group("end")))) if m else None


def read_kinetics_annotations(path: str | Path, label_map: ava_io.LabelMap) -> ava_io.Annotations:
    """The Kinetics part's CSV; a clip path in the video column (MMAction2) becomes its YouTube id."""
    ann = ava_io.read_annotations(path, label_map)
    vids = np.asarray(ann.video).astype(str)
    if any("/" in v or v.endswith(".mp4") for v in vids):
        names = {v: (clip_span(v) or (Path(v).stem,))[0] for v in set(vids.tolist())}
        ann = ava_io.Annotations(video=np.array([names[v] for v in vids], dtype=object), timestamp=ann.timestamp,
                                 box=ann.box, action=ann.action, person=ann.person)
    return ann


def _concat(a: ava_io.Annotations | None, b: ava_io.Annotations | None) -> ava_io.Annotations | None:
    if a is None or b is None:
        return a if b is None else b
    return ava_io.Annotations(video=np.concatenate([np.asarray(a.video, object), np.asarray(b.video, object)]),
                              timestamp=np.concatenate([a.timestamp, b.timestamp]),
                              box=np.concatenate([a.box, b.box]), action=np.concatenate([a.action, b.action]),
                              person=np.concatenate([a.person, b.person]))


def subset_rows(ava: ava_io.Annotations | None, kinetics: ava_io.Annotations | None, subset: str
                ) -> tuple[ava_io.Annotations | None, set[str]]:
    """The GT rows `subset` keeps and its videos (the videos extraction may write)."""
    if subset not in SUBSETS:
        raise AvaKineticsError(f"--subset {subset!r}: one of {', '.join(SUBSETS)}")
    keep_ava, keep_kin = subset in ("all", "ava"), subset in ("all", "kinetics")
    ann = _concat(ava if keep_ava else None, kinetics if keep_kin else None)
    videos = set(np.asarray(ann.video).astype(str).tolist()) if ann is not None else set()
    return ann, videos


def kinetics_keyframe_proposals(props: ava_io.Proposals, kinetics: ava_io.Annotations) -> ava_io.Proposals:
    """Proposals of Kinetics videos at their annotated keyframe only. MMAction2's `fetch_proposal.py`
    detects people at the keyframe second and the seconds either side (`<id>,<t - 1>` ... `<t + 1>`);
    its dataset reads the keyframe's alone, and a store keyframe without GT would be all background."""
    kv = np.asarray(kinetics.video).astype(str).tolist()
    kin, have = set(kv), set(zip(kv, timestamp_keys(kinetics.timestamp).tolist()))
    pv = np.asarray(props.video).astype(str).tolist()
    keep = np.array([v not in kin or (v, k) in have for v, k in zip(pv, timestamp_keys(props.timestamp).tolist())],
                    bool).reshape(-1)
    return ava_io.Proposals(props.video[keep], props.timestamp[keep], props.box[keep], props.score[keep])


def check_clip_spans(kinetics: ava_io.Annotations, available: dict, source: str) -> None:
    """A Kinetics row whose clip is there must fall inside it: a keyframe outside its clip's
    [start, end] has no clip to read (rows of clips not there are skipped and listed instead)."""
    vids = np.asarray(kinetics.video).astype(str)
    for i, (v, t) in enumerate(zip(vids, kinetics.timestamp)):
        path = available.get(v, (None,))[0]
        span = clip_span(path) if path is not None else None
        if span is not None and not span[1] <= t <= span[2]:
            raise AvaKineticsError(f"{source}: row {i + 1} (video {v}, {t:g} s): no clip of {v} holds it "
                                   f"(found {Path(path).name}, {span[1]:g}..{span[2]:g} s)")


def write_failed_list(out: str | Path, group: str, rank: int, failed: list[dict]) -> Path | None:
    """`<store>.<group>.failed[.rank<r>].txt` beside the store: one `video<TAB>reason` line per
    video not extracted (missing or unreadable); no file (an old one removed) when none failed."""
    out = Path(out)
    path = out.parent / f"{out.stem}.{group}.failed{'' if rank == 0 else f'.rank{rank}'}.txt"
    if not failed:
        path.unlink(missing_ok=True)
        return None
    lines = "".join(f"{f['video']}\t{' '.join(str(f['error']).split())}\n" for f in failed)
    atomic_write_bytes(path, lines.encode())
    return path
