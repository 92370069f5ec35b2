"""`cache info / verify / export / import / compact`: inspecting and converting feature stores
(compaction: extract/store/compact.py). `Cache*Args` are the subcommands' arguments; each field's
metadata is its CLI option (pipelines/commands/options.py).

HDF5 layouts (docs/STORE_SCHEMA.md, "HDF5 import/export"):
- "stagecache": one .h5 mirroring `Tables` (lossless round trip of every group and attribute).
- "stage-i3d", "stage-slowfast" (and "stage", the old name of "stage-slowfast"): the layouts of
  STAGE's released features, read and written by `extract/formats/stage_release.py` / `extract/formats/stage_export.py`.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from stagecache.core.errors import UserError
from stagecache.extract.store import StoreError, StoreWriter, format_bytes, open_store
from stagecache.extract.store.io import FRAGMENTS, axis_of
from stagecache.pipelines.tools.cache_verify import verify_store  # cache verify's home; re-exported

__all__ = ["CacheInfoArgs", "CacheVerifyArgs", "CacheExportArgs", "CacheImportArgs", "CacheCompactArgs", "store_info",
           "format_info", "verify_store", "export_h5", "import_h5", "detect_layout", "label_counts"]

STAGE_LAYOUTS = ("stage-i3d", "stage-slowfast", "stage")  # "stage": the old name of "stage-slowfast"
LAYOUTS = ("stagecache",) + STAGE_LAYOUTS
DEFAULT_BACKBONE = {"stage-i3d": "stage_i3d", "stage-slowfast": "stage_slowfast"}
_STORE_KEYS = ("schema_version", "project_version")  # added by the store to group attrs
LABEL_COLUMNS = ("background-first", "label-map")
_FILE = {"exists": True, "dir_okay": False}


# ----------------------------------------------------------------------------- the subcommands' arguments
class ExportPathError(UserError, ValueError):
    """`cache export` into a directory that does not exist (or onto a directory where a file goes)."""


def _store(help_text: str = "Store path or fsspec URL."):
    return field(metadata={"help": help_text, "argument": True})


def _check_choice(value, valid, what: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


@dataclass
class CacheInfoArgs:
    store: str = _store()
    as_json: bool = field(default=False, metadata={"help": "Print the info as JSON instead of a table.",
                                                   "option": "--json"})

    def __post_init__(self):
        if os.path.isfile(self.store):  # a CSV or an .h5 given for the store: say so, not NotADirectoryError
            raise StoreError(f"{self.store}: a file, not a feature store (a store is a directory holding zarr.json)")


@dataclass
class CacheVerifyArgs:
    store: str = _store()
    label_map: str | None = field(default=None, metadata={
        "help": "Also check the store's label ids against this pbtxt (default: no check).", "path": _FILE})
    repair: bool = field(default=False, metadata={
        "help": "Drop each damaged fragment (missing, resized or corrupt files) with its commit unit, so a resumed "
                "extraction or import redoes just those videos."})
    progress: bool = field(default=True, metadata={"help": "Hide the progress bar.", "off": "--no-progress"})


@dataclass
class CacheExportArgs:
    store: str = _store()
    out: str = field(metadata={"help": "HDF5 file, or a directory for --layout stage-i3d.", "argument": True,
                               "path": {}})
    layout: str = field(default="stagecache", metadata={
        "help": "'stagecache': lossless .h5 of every group; 'stage-i3d': directory OUT/<video>/<timestamp>.h5 "
                "(STAGE's I3D release); 'stage-slowfast' (alias 'stage'): one .h5 of <video>_<timestamp> groups "
                "(STAGE's SlowFast release). Labels get 81 columns, column 0 background, column c = id c.",
        "choices": LAYOUTS})
    backbone: str | None = field(default=None, metadata={
        "help": "Backbone group whose actor_pooled becomes 'features' (STAGE layouts; default: the only one)."})
    objects: str | None = field(default=None, metadata={
        "help": "Also write the objects in the release's objects_features.h5 layout to this file "
                "(STAGE layouts; needs base/object_feature).", "path": {"dir_okay": False}})

    def __post_init__(self):
        _check_choice(self.layout, LAYOUTS, "layout")
        # Files are written into existing directories (stage-i3d's OUT is a directory it creates).
        files = ([] if self.layout == "stage-i3d" else [("OUT", self.out)]) + [("--objects", self.objects)]
        for what, p in files:
            if p is None:
                continue
            parent = os.path.dirname(os.path.abspath(p))
            if os.path.isdir(p) or not os.path.isdir(parent):
                raise ExportPathError(f"{what} {p}: " + (f"is a directory, give a file name for --layout {self.layout}"
                                                         if os.path.isdir(p) else f"directory {parent} does not exist"))


@dataclass
class CacheImportArgs:
    src: str = field(metadata={"help": "HDF5 file, or STAGE's I3D actors directory.", "argument": True,
                               "path": {"exists": True}})
    store: str = _store("Store to build.")
    layout: str = field(default="auto", metadata={
        "help": "Layout of SRC. auto: a directory is stage-i3d (ACTORS_DIR/<video>/<timestamp>.h5), an .h5 with a "
                "stagecache root attribute is stagecache, any other .h5 stage-slowfast (<video>_<timestamp> "
                "groups). 'stage' is the old name of stage-slowfast.", "choices": ("auto",) + LAYOUTS})
    objects: str | None = field(default=None, metadata={
        "help": "STAGE's objects_features.h5 (<video>_<timestamp>_features/_boxes/_cls_prob); object class = "
                "argmax of cls_prob without its background column 0, score = that probability.", "path": _FILE})
    object_names: str | None = field(default=None, metadata={
        "help": "Object class names, one a line in cls_prob column order without background "
                "(default: object_<column>).", "option": "--object-classes", "path": _FILE})
    split: str | None = field(default=None, metadata={
        "help": "Split name for STAGE layouts (default: the file or directory name)."})
    label_map: str | None = field(default=None, metadata={
        "help": "pbtxt naming the label ids of a STAGE file (default: every column, names class_<id>).",
        "path": _FILE})
    label_columns: str = field(default="background-first", metadata={
        "help": "STAGE label columns: background-first (the releases: column 0 background, column c = id c; with "
                "--label-map only its ids are kept) or label-map (column j = the j-th id of --label-map, else "
                "ids 1..L).", "choices": LABEL_COLUMNS})
    backbone: str | None = field(default=None, metadata={
        "help": "Group name for the imported STAGE features (default: stage_i3d / stage_slowfast)."})
    detected: bool = field(default=False, metadata={
        "help": "STAGE boxes are detections (actor_is_gt=False) rather than ground truth."})
    progress: bool = field(default=True, metadata={"help": "Hide the progress bar.", "off": "--no-progress"})

    def __post_init__(self):
        _check_choice(self.layout, ("auto",) + LAYOUTS, "layout")
        _check_choice(self.label_columns, LABEL_COLUMNS, "label_columns")


@dataclass
class CacheCompactArgs:
    store: str = _store()
    target_mb: int = field(default=1024, metadata={"help": "Size of the merged fragments in MiB.",
                                                   "range": {"min": 1}})
    stale_minutes: float = field(default=60.0, metadata={
        "help": "Uncommitted fragments of dead writers older than this are deleted (a live writer's, known by its "
                "lock, never are; fsspec stores have no locks: age alone decides).", "range": {"min": 0}})
    dry_run: bool = field(default=False, metadata={"help": "Only report what would be done."})

    def __post_init__(self):
        if self.target_mb < 1 or self.stale_minutes < 0:
            raise ValueError(f"target_mb must be >= 1 and stale_minutes >= 0, got {self.target_mb}, {self.stale_minutes}")


# ----------------------------------------------------------------------------- info
def store_info(path: str) -> dict:
    """Counts, dims and bytes on disk per array of every group."""
    st = open_store(path)
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    total = 0
    nfiles = 0
    for rel, size in st.loc.files():
        total += size
        nfiles += 1
        parts = rel.split("/")
        if parts[0] == FRAGMENTS and len(parts) >= 4:
            sizes[(parts[1], parts[2])] += size
    groups = {}
    for g in sorted(st.groups):
        arrays = {}
        if g in st.fragments:
            for n, (shape, dt) in st.array_info(g).items():
                arrays[n] = {"shape": list(shape), "dtype": dt,
                             "bytes": sum(sizes[(f.id, n)] for f in st.fragments[g])}
        groups[g] = {"attrs": st.groups[g], "videos": len(st._src.get(g, {})), "missing": len(st.missing(g)),
                     "fragments": len(st.fragments.get(g, [])), "arrays": arrays}
    return {"path": st.path, "attrs": st.attrs, "videos": len(st.videos), "keyframes": st.num_keyframes,
            "actors": st.num_actors, "objects": st.num_objects, "files": nfiles, "bytes": total, "groups": groups,
            "labels": label_counts(st), "memory": _memory_by_head(st)}


def _memory_by_head(st) -> dict:
    """Per head, a split's in-memory size: resident, and the least streamed (train-head --memory-budget)."""
    from stagecache.pipelines.training.split import memory_by_head

    return memory_by_head(st)


def label_counts(st) -> list[dict]:
    """Per label id: its name and how many actors carry it (so one sees whether the columns line
    up with the label map); empty without a base group."""
    a = st.attrs
    if "base" not in st.fragments:
        return []
    counts = st.load({"base": ["actor_labels"]}).data["base/actor_labels"].long().sum(0).tolist()
    return [{"id": int(i), "name": str(n), "actors": int(c)} for i, n, c in zip(a["label_ids"], a["label_names"], counts)]


def format_info(info: dict) -> str:
    a = info["attrs"]
    lines = [f"store {info['path']}  split={a['split']}  schema v{a['schema_version']}  created by {a['created_by']}",
             f"  {info['videos']} videos, {info['keyframes']} keyframes, {info['actors']} actors, "
             f"{info['objects']} objects; {len(a['label_ids'])} labels; "
             f"{len(a.get('object_classes') or [])} object classes",
             f"  {info['files']} files, {format_bytes(info['bytes'])} on disk"]
    if info.get("labels"):
        lines.append("  labels (id, name, actors):")
        lines += [f"    {x['id']:>4}  {x['name']:<40} {x['actors']}" for x in info["labels"]]
    for g, gi in info["groups"].items():
        extra = f", {gi['missing']} MISSING" if gi["missing"] else ""
        attrs = {k: v for k, v in gi["attrs"].items() if k not in _STORE_KEYS}
        lines.append(f"  group {g}: {gi['videos']} videos in {gi['fragments']} fragment(s){extra}  attrs={json.dumps(attrs)}")
        for n, ai in gi["arrays"].items():
            lines.append(f"    {n:<18} {ai['dtype']:<8} {str(tuple(ai['shape'])):<22} {format_bytes(ai['bytes'])}")
    if info.get("memory"):
        lines.append("  in memory as a split, per head (resident / least streamed, all actors; train-head --memory-budget):")
        lines += [f"    {h:<10} {format_bytes(m['resident']):>12} / {format_bytes(m['streamed_min'])}"
                  for h, m in info["memory"].items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HDF5 export / import
def export_h5(path: str, out: str, *, layout: str = "stagecache", backbone: str | None = None,
              objects: str | None = None) -> dict | None:
    """Write the store as one .h5 (layout 'stagecache') or in a layout of STAGE's release
    (`out` is a directory for stage-i3d; `objects` also writes the objects file)."""
    import h5py

    if layout not in LAYOUTS:
        raise StoreError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if layout in STAGE_LAYOUTS:
        from stagecache.extract.formats.stage_export import export_release

        return export_release(path, out, layout="stage-slowfast" if layout == "stage" else layout,
                              backbone=backbone, objects=objects)
    st = open_store(path)
    t = st.load()
    with h5py.File(out, "w") as f:
        f.attrs["stagecache"] = json.dumps(st.attrs)
        f.create_dataset("video_names", data=np.array(t.video_names, dtype=object), dtype=h5py.string_dtype())
        for name in ("kf_video", "kf_time", "kf_actor_offset", "kf_object_offset"):
            f.create_dataset(name, data=getattr(t, name).numpy())
        for g in st.groups:
            grp = f.create_group(f"groups/{g}")
            grp.attrs["attrs"] = json.dumps({k: v for k, v in st.groups[g].items() if k not in _STORE_KEYS})
        for key, x in t.data.items():
            f.create_dataset(f"groups/{key}", data=x.numpy())
    return None


def detect_layout(src: str) -> str:
    """stage-i3d for a directory, stagecache for our own export, else stage-slowfast."""
    import h5py

    if os.path.isdir(src):
        return "stage-i3d"
    try:
        with h5py.File(src, "r") as f:
            return "stagecache" if "stagecache" in f.attrs else "stage-slowfast"
    except OSError as e:
        raise StoreError(f"{src}: not a readable HDF5 file ({e})") from None


def import_h5(src: str, path: str, *, layout: str = "auto", split: str | None = None,
              label_map: str | None = None, label_columns: str = "background-first", backbone: str | None = None,
              boxes_are_gt: bool = True, objects: str | None = None, object_names: str | None = None,
              rank: int = 0, progress: bool = False, log=None) -> str:
    """Build a store at `path` from `src` in any layout; returns the layout read. For STAGE's
    layouts `log` (if given) receives the summary line."""
    import h5py

    layout = detect_layout(src) if layout == "auto" else layout
    layout = "stage-slowfast" if layout == "stage" else layout
    if layout not in LAYOUTS:
        raise StoreError(f"unknown layout {layout!r}; valid: auto, {', '.join(LAYOUTS)}")
    if layout == "stagecache":
        if objects:
            raise StoreError(f"{src}: --objects applies to STAGE layouts only; a stagecache export holds its objects")
        if log is not None:
            log(f"importing {src} (stagecache layout) into {path}: every group, committed when all is written")
        with h5py.File(src, "r") as f:
            _import_stagecache(f, src, path, rank)
        return layout
    from stagecache.extract.formats.stage_release import import_stage_i3d, import_stage_slowfast

    run = import_stage_i3d if layout == "stage-i3d" else import_stage_slowfast
    summary = run(src, path, split=split, backbone=backbone or DEFAULT_BACKBONE[layout], objects=objects,
                  label_map=label_map, label_columns=label_columns, object_names=object_names,
                  boxes_are_gt=boxes_are_gt, rank=rank, progress=progress)
    if log is not None:
        log(summary.line())
    return layout


def _import_stagecache(f, src, path, rank):
    a = json.loads(f.attrs["stagecache"])
    videos = [v.decode() if isinstance(v, bytes) else str(v) for v in f["video_names"][()]]
    kv, kt = f["kf_video"][()], f["kf_time"][()]
    ao, oo = f["kf_actor_offset"][()], f["kf_object_offset"][()]
    vk = np.searchsorted(kv, np.arange(len(videos) + 1))  # keyframes of video i: [vk[i], vk[i+1])
    off = {"actor": ao, "object": oo, "kf": np.arange(len(kt) + 1)}
    with StoreWriter(path, split=a["split"], label_ids=a["label_ids"], label_names=a["label_names"],
                     object_classes=a.get("object_classes"), rank=rank) as w:
        for g, grp in f["groups"].items():
            w.declare_group(g, json.loads(grp.attrs["attrs"]))
            data = {n: grp[n][()] for n in grp}
            for i, v in enumerate(videos):
                k0, k1 = vk[i], vk[i + 1]
                arrays = {n: x[off[axis_of(n)][k0]:off[axis_of(n)][k1]] for n, x in data.items()}
                w.add_video(g, v, timestamps=kt[k0:k1], actor_counts=np.diff(ao[k0:k1 + 1]),
                            object_counts=np.diff(oo[k0:k1 + 1]), arrays=arrays)
