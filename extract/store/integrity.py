"""What a store promises about itself, checked: the files of each fragment (sizes, checksums), the
manifests' own consistency, stored dtypes and the values of the small arrays.

docs/STORE_SCHEMA.md ("Integrity") is the specification. Every manifest written by this version
lists each file of its fragment (`files`: path inside `fragments/<id>/` -> [size, crc32]), computed
from the bytes in memory while the fragment is written. Readers compare sizes on every read (a stat
per file: zarr's fill value would otherwise turn a missing chunk into zeros); `cache verify` also
compares the checksums. Manifests of older writers have no `files`: they are read as before.

The checksum is zlib's CRC-32: it reads numpy buffers without a copy at ~4 GB/s here, while
google-crc32c's C extension accepts only `bytes` and the copy costs more than the hash
(BENCHMARKS.md, "Store checksums").
"""
from __future__ import annotations

import json
import os
import zlib

import numpy as np

from stagecache.extract.store.io import (FRAGMENTS, ArrayReader, Location, StoreError, axis_of, chunk_rows,
                                         read_json_checked)

CHECKSUM = "crc32"  # the manifest's `checksum` key names the algorithm of `files`
REPAIR_HINT = "`cache verify --repair` drops the fragment's commit unit, then rerun the extraction to redo its videos"


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def chunk_files(name: str, a: np.ndarray) -> dict[str, list[int]]:
    """path -> [size, crc32] of the chunk files zarr writes for `a` (bytes codec, the chunks of
    io.chunk_rows, every chunk written; the last one padded with the fill value 0 to full size)."""
    out = {}
    n = a.shape[0] if a.ndim else 0
    if a.size == 0:
        return out
    rows = chunk_rows(a.shape, a.dtype.itemsize)
    rowbytes = a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    for c in range((n + rows - 1) // rows):
        part = flat[c * rows * rowbytes:min(n, (c + 1) * rows) * rowbytes]
        crc = zlib.crc32(part.data)
        pad = rows * rowbytes - len(part)
        if pad:
            crc = zlib.crc32(bytes(pad), crc)
        key = "/".join([name, "c", str(c)] + ["0"] * (a.ndim - 1))
        out[key] = [rows * rowbytes, crc & 0xFFFFFFFF]
    return out


def fragment_files(loc: Location, fid: str, arrays: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Every file of a just-written fragment: its chunks (from memory) and its zarr.json files
    (read back: a few hundred bytes each)."""
    out = {}
    for sub in ["zarr.json"] + [f"{n}/zarr.json" for n in arrays]:
        try:
            data = loc.read_bytes(f"{FRAGMENTS}/{fid}/{sub}")
        except FileNotFoundError:  # removed meanwhile: write_manifests refuses to commit it
            continue
        out[sub] = [len(data), _crc(data)]
    for n, a in arrays.items():
        out.update(chunk_files(n, a))
    return out


def where(loc: Location, man: dict, name: str | None = None) -> str:
    arr = f" array {name!r}" if name else ""
    return f"{loc.display}: group {man.get('group')!r}{arr} fragment {man.get('fragment')}"


def _size(loc: Location, sub: str) -> int | None:
    try:
        if loc.local:
            return os.stat(loc._p(sub)).st_size
        return int(loc.fs.size(loc._p(sub)))
    except (FileNotFoundError, OSError):
        return None


def file_problems(loc: Location, man: dict, names=None, *, sums: bool = False) -> list[str]:
    """Missing files and wrong sizes (and with `sums`, wrong checksums) of a fragment's recorded
    files, restricted to the arrays `names` (None: all, and the fragment's zarr.json)."""
    files = man.get("files")
    if not files:
        return []
    out = []
    for rel, (size, crc) in sorted(files.items()):
        arr = rel.split("/", 1)[0] if "/" in rel else None
        if names is not None and arr not in names:
            continue
        sub = f"{FRAGMENTS}/{man['fragment']}/{rel}"
        have = _size(loc, sub)
        if have is None:
            out.append(f"{where(loc, man, arr)}: file {sub} is missing")
        elif have != size:
            out.append(f"{where(loc, man, arr)}: file {sub} has {have} bytes, its manifest says {size}")
        elif sums and _crc(loc.read_bytes(sub)) != crc:
            out.append(f"{where(loc, man, arr)}: file {sub} does not match its checksum (damaged content)")
    return out


def check_files(loc: Location, man: dict, names=None) -> None:
    """StoreError naming store, group, array and fragment on the first missing or resized file."""
    bad = file_problems(loc, man, names)
    if bad:
        raise StoreError(f"{bad[0]}; {REPAIR_HINT}")


def stored_dtype(name: str, dtype) -> np.dtype:
    """The dtype the store keeps for an array called `name` given data of `dtype`
    (docs/STORE_SCHEMA.md, dtypes): the one home of the naming rule."""
    dt = np.dtype(dtype)
    if name.endswith("_labels"):
        return np.dtype(np.uint8)
    if name.endswith("_is_gt") or dt.kind == "b":
        return np.dtype(bool)
    if dt.kind == "f":
        return np.dtype(np.float32 if name.endswith(("_box", "_score")) else np.float16)
    if dt.kind in "iu":
        return np.dtype(np.int64)
    raise ValueError(f"{name}: unsupported dtype {dt}")


def manifest_problems(loc: Location, man: dict) -> list[str]:
    """A manifest that contradicts itself: per-keyframe lists of different lengths, array rows that
    differ from the counts, dtypes other than the schema's."""
    try:
        kfc = np.asarray(man["kf_counts"], dtype=np.int64)
        n_kf = len(man["timestamps"])
        rows = {"kf": n_kf, "actor": int(np.sum(man["actor_counts"])), "object": int(np.sum(man["object_counts"]))}
        out = []
        if len(kfc) != len(man["videos"]) or int(kfc.sum()) != n_kf or len(man["actor_counts"]) != n_kf \
                or len(man["object_counts"]) != n_kf:
            out.append(f"{where(loc, man)}: videos, kf_counts, timestamps and actor/object counts disagree")
        for n, d in sorted(man["arrays"].items()):
            shape, dt = list(d["shape"]), str(d["dtype"])
            if not shape or shape[0] != rows[axis_of(n)]:
                out.append(f"{where(loc, man, n)}: shape {shape} but the manifest's counts give "
                           f"{rows[axis_of(n)]} {axis_of(n)} rows")
            elif str(stored_dtype(n, dt)) != dt:
                out.append(f"{where(loc, man, n)}: dtype {dt}, the schema stores {stored_dtype(n, dt)}")
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return [f"{where(loc, man)}: malformed manifest commits/{man.get('fragment')}.json ({type(e).__name__}: {e})"]


def meta_problem(loc: Location, man: dict, name: str, meta: dict) -> str | None:
    """The array's zarr.json disagreeing with the manifest (shape, data type): zarr would read it
    (a shortened shape drops rows, an edited type reinterprets bytes)."""
    want = man["arrays"].get(name)
    if want is None:
        return None
    try:
        shape, dt = list(meta["shape"]), str(meta["data_type"])
    except (KeyError, TypeError):
        return f"{where(loc, man, name)}: {FRAGMENTS}/{man['fragment']}/{name}/zarr.json is not zarr array metadata"
    if shape != list(want["shape"]) or dt != str(want["dtype"]):
        return (f"{where(loc, man, name)}: {FRAGMENTS}/{man['fragment']}/{name}/zarr.json says {dt}{shape}, "
                f"its manifest {want['dtype']}{list(want['shape'])} (an edited or damaged file)")
    return None


def value_problem(name: str, x: np.ndarray) -> tuple[str, int] | None:
    """(what is wrong, first bad row) for the values of a small array (boxes, labels), or None. Boxes are
    normalised x1,y1,x2,y2 in [0,1] with x1<=x2, y1<=y2; `*_labels` are 0/1."""
    if name.endswith("_box") and x.size:
        if x.ndim != 2 or x.shape[1] != 4:
            return f"{name} has shape {x.shape}, expected (N, 4)", 0
        xf = x.astype(np.float64, copy=False)
        bad = ((xf < 0) | (xf > 1)).any(1) | (xf[:, 0] > xf[:, 2]) | (xf[:, 1] > xf[:, 3])
        if bad.any():
            r = int(np.argmax(bad))
            return f"{int(bad.sum())} {name} row(s) outside [0,1] or with x1>x2 / y1>y2 (first: {x[r].tolist()})", r
    if name.endswith("_labels") and x.size and x.max() > 1:
        r = int(np.argmax((x > 1).reshape(len(x), -1).any(1)))
        return f"{name} holds values other than 0/1 (first: {int(x[r].max())})", r
    return None


CHECKED_VALUES = ("_box", "_labels")  # arrays whose values readers check (small: a pass is cheap)


def fragment_problems(loc: Location, man: dict, *, sums: bool = False) -> list[str]:
    """Everything wrong with a committed fragment's files (verify, repair, compaction): its
    manifest's own consistency, each array's zarr.json against the manifest, missing and resized
    files, and with `sums` their checksums. Empty: sound (or an older manifest's unrecorded files)."""
    out = manifest_problems(loc, man)
    if out:
        return out
    for n in sorted(man["arrays"]):
        sub = f"{FRAGMENTS}/{man['fragment']}/{n}/zarr.json"
        try:
            meta = json.loads(loc.read_bytes(sub).decode("utf-8"))
        except FileNotFoundError:
            out.append(f"{where(loc, man, n)}: file {sub} is missing")
            continue
        except ValueError:
            out.append(f"{where(loc, man, n)}: file {sub} is not valid JSON")
            continue
        bad = meta_problem(loc, man, n, meta) if isinstance(meta, dict) else f"{where(loc, man, n)}: {sub} is not a JSON object"
        if bad:
            out.append(bad)
    seen = set(out)
    return out + [p for p in file_problems(loc, man, sums=sums) if p not in seen]


def open_array(loc: Location, man: dict, name: str) -> ArrayReader:
    """The reader of one array of a committed fragment, after the checks every read makes: its
    zarr.json agrees with the manifest (shape, data type) and its recorded files have their sizes
    (StoreError naming store, group, array, fragment and file). FileNotFoundError when the whole
    fragment is gone (compacted away after the store was opened)."""
    fid = man["fragment"]
    sub = f"{FRAGMENTS}/{fid}/{name}"
    if not loc.exists(f"{FRAGMENTS}/{fid}"):
        raise FileNotFoundError(f"{loc.display}: {FRAGMENTS}/{fid}")
    w = where(loc, man, name)
    meta = read_json_checked(loc, f"{sub}/zarr.json", f"array {name!r}",
                             missing=f"{w}: file {sub}/zarr.json is missing; {REPAIR_HINT}")
    bad = meta_problem(loc, man, name, meta)
    if bad:
        raise StoreError(f"{bad}; {REPAIR_HINT}")
    check_files(loc, man, [name])
    return ArrayReader(loc, fid, name, strict=bool(man.get("files")), where=w, meta=meta)
