"""What `extract features` records in the store about the options it ran with, and what it checks
before it writes (extract/features.py runs the job): the options against that record, and that the
extraction would store something at all (`EmptyExtractionError`: no keyframe, or every keyframe of
every video outside it).

Every `ExtractArgs` field says in its metadata whether it changes what is stored (`"stored"`):
  "base"      the boxes (the `base` group's attrs): box sources, thresholds, offsets, label map, ...
  "features"  the feature group's attrs: backbone and its args, checkpoint, sampling, pooling, ...
  None        it does not change what is stored (paths of inputs that may move, threads, devices, ...)
A field without the key counts as "features", so an option added later is recorded (and checked on
a resume) unless its field says it changes nothing. The record's keys are the field names (file
paths as their file names), except `--excluded`: `excluded_file` and `excluded_timestamps`
(docs/STORE_SCHEMA.md, the contract `train-head` reads).

A rerun into a store whose group already holds committed data must give the recorded values:
`check_options` raises `OptionsChangedError` naming each differing option, its stored and its given
value. A group without committed data binds nothing (its record is replaced), except base, whose
record binds while any group holds data (their rows follow its boxes). `--restart` drops the job's
group (and `base`, when the box options changed and no other group was extracted on it): the
group's fragments, then base's, each data first and manifest last, then the records, so a kill at
any point leaves the old options' data under the old record, or groups without data a rerun fills.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_write_bytes
from stagecache.core.errors import UserError
from stagecache.extract.store.commit import Commits, commit_point, remove_fragment
from stagecache.extract.store.io import META, Location

STORED = "stored"  # the ExtractArgs metadata key
BASE, FEATURES = "base", "features"


class OptionsChangedError(UserError):
    """A resume whose options differ from those the store's data was extracted with."""


class EmptyExtractionError(UserError):
    """An extraction that would store nothing (no keyframe at all, or every keyframe outside its video)."""


def _args_fields(args) -> list[dataclasses.Field]:
    # Only ExtractArgs' own fields: a launcher's subclass adds how it runs (executor, shards, ...).
    from stagecache.extract.features_args import ExtractArgs

    return list(dataclasses.fields(ExtractArgs))


def stored_kind(f: dataclasses.Field) -> str | None:
    return f.metadata.get(STORED, FEATURES)


def option_name(f: dataclasses.Field) -> str:
    """The field's command-line option (`--time-offset`)."""
    opt = f.metadata.get("option")
    return opt.split("/")[0] if opt else "--" + f.name.replace("_", "-")


def _value(f: dataclasses.Field, v):
    if v is not None and f.metadata.get("path", {}).get("dir_okay") is False:
        return Path(v).name  # a file's name: the store must not depend on where the inputs lie
    if isinstance(v, tuple):
        return list(v)
    return v


def excluded_record(path: str | None) -> dict:
    """`excluded_file` (the file name) and `excluded_timestamps` ([video, whole seconds] pairs, sorted):
    the val store's excluded keyframes, read by `train-head` (docs/STORE_SCHEMA.md)."""
    if path is None:
        return {"excluded_file": None, "excluded_timestamps": []}
    from stagecache.extract.formats.excluded import read_excluded

    pairs = []
    for video, key in sorted(read_excluded(path)):
        if key % 1000:
            raise UserError(f"{path}: excluded timestamp {key / 1000:g} of video {video} is not a whole second "
                            "(AVA's excluded timestamps are)")
        pairs.append([str(video), int(key // 1000)])
    return {"excluded_file": Path(path).name, "excluded_timestamps": pairs}


def option_record(args) -> dict[str, dict]:
    """{"base": {...}, "features": {...}}: the values of every option that changes what is stored."""
    out = {BASE: {}, FEATURES: {}}
    for f in _args_fields(args):
        kind = stored_kind(f)
        if kind is None:
            continue
        if kind not in out:
            raise TypeError(f"ExtractArgs.{f.name}: metadata {STORED!r} must be 'base', 'features' or None")
        v = getattr(args, f.name)
        if f.name == "excluded":
            out[kind].update(excluded_record(v))
        else:
            out[kind][f.name] = _same_json(_value(f, v))
    return out


def _options_of_keys(args) -> dict[str, str]:
    names = {f.name: option_name(f) for f in _args_fields(args)}
    names.update(excluded_file="--excluded", excluded_timestamps="--excluded (its timestamps)")
    return names


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass
class StoreState:
    """What a store at `--out` already holds, read before anything is written."""
    path: str
    done: dict[str, set[str]]  # group -> committed videos
    attrs: dict[str, dict]  # group -> its recorded attrs (meta/<group>.json)

    @classmethod
    def read(cls, path: str) -> "StoreState":
        loc = Location(path)
        if not loc.exists("zarr.json"):
            return cls(path, {}, {})
        done: dict[str, set[str]] = {}
        for m in Commits(loc).visible():
            done.setdefault(m["group"], set()).update(m["videos"])
        attrs = {}
        for name in loc.listdir(META):
            if name.endswith(".json") and not name.startswith("."):
                attrs[name[:-5]] = loc.read_json(f"{META}/{name}").get("attrs", {})
        return cls(path, done, attrs)

    def comparable(self, group: str, attrs: dict, replace: bool) -> dict:
        """What to declare for `group`: all of `attrs` for a new (or replaced) record; else only the
        keys its record holds (a store of an older stagecache records fewer: the writer compares
        those, and the new keys must not make it refuse the resume)."""
        old = self.attrs.get(group)
        return dict(attrs) if replace or old is None else {k: v for k, v in attrs.items() if k in old}

    def differences(self, group: str, record: dict, names: dict[str, str]) -> list[str]:
        """`--option stored X, given Y` for each recorded key that differs, when `group` holds data
        (base: when any group does, as every group's rows follow base's boxes). Keys the stored record
        lacks (a store of an older stagecache, or of another writer) are not compared."""
        if not (any(self.done.values()) if group == "base" else self.done.get(group)):
            return []
        old = self.attrs.get(group) or {}
        keys = [k for k, v in record.items() if k in old and _same_json(old[k]) != _same_json(v)]
        if "excluded_file" in keys and "excluded_timestamps" in keys:  # another file: its name says it
            keys.remove("excluded_timestamps")
        return [f"{names.get(k, k)} stored {_short(old[k])}, given {_short(record[k])}" for k in keys]


def _same_json(v):
    """A value as it reads back from JSON (tuples are lists, dict keys strings)."""
    if isinstance(v, dict):
        return {str(k): _same_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_same_json(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def check_options(args, state: StoreState, group: str) -> list[str]:
    """The groups `--restart` must drop ([] when the store agrees with the options); without
    `--restart`, a difference is an `OptionsChangedError` (one line)."""
    rec, names = option_record(args), _options_of_keys(args)
    diff_base = state.differences("base", rec[BASE], names)
    diff_group = state.differences(group, rec[FEATURES], names)
    if not diff_base and not diff_group:
        return []
    if not args.restart:
        which = ([f"boxes ('base'): {'; '.join(diff_base)}"] if diff_base else []) + \
                ([f"features ({group!r}): {'; '.join(diff_group)}"] if diff_group else [])
        raise OptionsChangedError(
            f"{args.out}: the store was extracted with other options, {' / '.join(which)}; rerun with the stored "
            f"values to resume, add --restart to start {group!r}{' and base' if diff_base else ''} over, or write "
            "to another --out")
    # the job's group and those derived from it (ViT layer groups `<group>.l<n>`, committed with it)
    drop = [group] + sorted(g for g in state.attrs.keys() | state.done.keys() if g.startswith(group + ".")) \
        + (["base"] if diff_base else [])
    others = sorted(g for g, v in state.done.items() if v and g not in drop)
    if diff_base and others:
        raise OptionsChangedError(
            f"{args.out}: --restart with other box options ({'; '.join(diff_base)}) would invalidate groups "
            f"{others} extracted on the stored boxes; write to another --out")
    return drop


def restart_groups(path: str, groups: list[str], log=None) -> int:
    """Drop `groups` from the store: every fragment data first, manifest last (a kill leaves the
    rest of the old data visible under its old record, or a manifest without data that is ignored
    and removed by the next restart), then the groups' records. Returns the fragments removed."""
    groups = list(dict.fromkeys(groups))
    loc = Location(path)
    c = Commits(loc)
    # the feature groups before base: a kill half-way leaves base with part of its features (an old
    # store a plain rerun resumes), never features without the boxes they were pooled on
    fids = [fid for g in sorted(groups, key=lambda g: g == "base")
            for fid, m in sorted(c.manifests.items()) if m["group"] == g]
    if log is not None:
        log(f"--restart: removing {len(fids)} fragment(s) of {groups} from {path}")
    for fid in fids:
        remove_fragment(loc, fid)
        commit_point()  # a durable step: the tests' kill hook (STAGECACHE_KILL_AFTER_COMMITS)
    for g in groups:
        if loc.exists(f"{META}/{g}.json"):
            loc.remove(f"{META}/{g}.json")
    return len(fids)


def inside_video(timestamps: np.ndarray, offset: float, duration: float) -> np.ndarray:
    """Which keyframes fall inside the video (extract/clip_loader.py decodes the same ones)."""
    vt = np.asarray(timestamps, np.float64) - offset
    return (vt >= 0) & (vt <= duration)


def outside_message(video: str, timestamps, offset: float, duration: float) -> str:
    """One line: every keyframe of `video` falls outside it, and the likely fix."""
    ts = np.asarray(timestamps, np.float64)
    span = f"{ts.min():g} s" if ts.min() == ts.max() else f"{ts.min():g}-{ts.max():g} s"
    msg = (f"video {video}: all {len(ts)} keyframe(s) ({span}) fall outside the video (0-{duration:g} s) at "
           f"--time-offset {offset:g}")
    if offset != 900 and inside_video(ts, 900.0, duration).all():
        return msg + "; AVA timestamps need --time-offset 900 (the trimmed 15-min clips start at 900 s)"
    if offset != 0 and inside_video(ts, 0.0, duration).all():
        return msg + "; full-length videos need --time-offset 0"
    return msg + ("; check that --annotations / --proposals belong to these videos and --time-offset, --fps, "
                  "--kinetics-names")


def probe_duration(path, *, fps: float, offset: float) -> float | None:
    """The video's duration as the decoder sees it, or None when it cannot be opened (the decoding
    loop then reports that video's error)."""
    from stagecache.extract.video import open_video

    try:
        with open_video(path, fps=fps, time_offset=offset) as r:
            return float(r.duration)
    except Exception:
        return None


def nothing_to_extract(args, detectors: bool) -> EmptyExtractionError:
    if detectors:
        return EmptyExtractionError(f"no video found under --videos {args.videos}: nothing to extract")
    files = " / ".join(p for p in (args.annotations, args.proposals) if p)
    return EmptyExtractionError(f"{files}: no keyframe at all (no rows): nothing to extract")


def drop_videos_outside(todo: list[str], ts_of: dict, available: dict, offsets: dict, fps: float,
                        summary: dict) -> None:
    """A video none of whose keyframes falls inside it is not extracted: it fails with the cause and
    the likely fix (a video losing only some keyframes keeps the others, with a warning). When no
    video is left, the whole extraction is an `EmptyExtractionError`."""
    dropped = []
    for v in list(todo):
        ts = ts_of[v]
        dur = probe_duration(available[v][0], fps=fps, offset=offsets[v]) if len(ts) else None
        if dur is not None and not inside_video(ts, offsets[v], dur).any():
            dropped.append(outside_message(v, ts, offsets[v], dur))
            summary["failed"].append({"video": v, "error": dropped[-1]})
            todo.remove(v)
    if dropped and not todo:
        more = f" (and {len(dropped) - 1} more video(s) like it)" if len(dropped) > 1 else ""
        raise EmptyExtractionError(dropped[0] + more)


def write_side_file(args, summary: dict | None, rank: int) -> None:
    """The side file `<split>.<group>.extract[.rank<r>].json` beside the store: the arguments, the
    summary (None while running) and what the store records for base and the group, read back from
    the store, so the two never disagree. Written only after the store accepted the options."""
    out = Path(args.out)
    path = out.parent / f"{out.stem}.{args.group}.extract{'' if rank == 0 else f'.rank{rank}'}.json"
    recorded = StoreState.read(args.out).attrs
    doc = {"args": dataclasses.asdict(args), "summary": summary,
           "store_attrs": {g: recorded.get(g) for g in ("base", args.group)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())
