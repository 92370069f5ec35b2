"""Low-level I/O of the feature store: where files live, atomic JSON, fragments and manifests.

The layout is specified in docs/STORE_SCHEMA.md. This module knows nothing about actors or
keyframes; `extract/store.py` builds the reader/writer on top of it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from typing import Any

import numpy as np
import zarr

SCHEMA_VERSION = 1

COMMITS = "commits"
FRAGMENTS = "fragments"
META = "meta"

# Inner chunk ~1 MiB so that lazy reads of one keyframe touch little data; a shard (one file) holds
# up to SHARD_BYTES so that even a whole-split fragment stays a handful of files.
CHUNK_BYTES = 1 << 20
SHARD_BYTES = 256 << 20


class StoreError(RuntimeError):
    """The store is missing, incompatible, inconsistent or incomplete (message names store/video)."""


def project_version() -> str:
    try:
        from importlib.metadata import version

        return version("stagecache")
    except Exception:
        return "0.1.0+unknown"


AXES = ("actor_", "object_", "kf_")


def axis_of(name: str) -> str:
    """'actor' / 'object' / 'kf' from an array name's prefix."""
    for a in AXES:
        if name.startswith(a) and len(name) > len(a):
            return a[:-1]
    raise StoreError(f"array name {name!r} must start with one of {', '.join(AXES)} (its row axis)")


def read_root_attrs(loc: "Location") -> dict:
    """The root's `stagecache` attributes, refusing other schema versions."""
    try:
        meta = loc.read_json("zarr.json")
    except FileNotFoundError:
        raise StoreError(f"{loc.display}: no feature store here (no zarr.json)") from None
    attrs = (meta.get("attributes") or {}).get("stagecache")
    if meta.get("node_type") != "group" or not isinstance(attrs, dict):
        raise StoreError(f"{loc.display}: zarr.json is not a stagecache store root (no 'stagecache' attributes)")
    ver = attrs.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise StoreError(
            f"{loc.display}: store schema_version is {ver}, this stagecache reads schema version "
            f"{SCHEMA_VERSION} (docs/STORE_SCHEMA.md); re-extract or convert it with "
            f"`cache export` / `cache import` from a matching version")
    return attrs


class Location:
    """A store root: a local directory (plain path or file:// URL) or an fsspec URL."""

    def __init__(self, path_or_url: str):
        path_or_url = str(path_or_url)
        self.display = path_or_url
        if path_or_url.startswith("file://"):
            path_or_url = path_or_url[len("file://"):]
        self.local = "://" not in path_or_url
        if self.local:
            self.root = os.path.abspath(path_or_url)
            self.fs = None
        else:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(path_or_url)
            self.url = path_or_url.rstrip("/")

    # -- paths -------------------------------------------------------------------------------
    def _p(self, sub: str) -> str:
        if self.local:
            return os.path.join(self.root, *sub.split("/")) if sub else self.root
        return f"{self.root.rstrip('/')}/{sub}" if sub else self.root

    def zarr_target(self, sub: str) -> str:
        """What to hand to zarr for the node at `sub`."""
        if self.local:
            return self._p(sub)
        return f"{self.url}/{sub}" if sub else self.url

    # -- files ---------------------------------------------------------------------------------
    def exists(self, sub: str) -> bool:
        return os.path.exists(self._p(sub)) if self.local else self.fs.exists(self._p(sub))

    def read_bytes(self, sub: str) -> bytes:
        if self.local:
            with open(self._p(sub), "rb") as f:
                return f.read()
        return self.fs.cat_file(self._p(sub))

    def read_json(self, sub: str) -> Any:
        return json.loads(self.read_bytes(sub).decode("utf-8"))

    def write_json_atomic(self, sub: str, obj: Any) -> None:
        """Readers see either nothing or the whole file: temp + os.replace locally, a single
        object put on fsspec stores."""
        data = json.dumps(obj, sort_keys=True).encode("utf-8")
        if self.local:
            path = self._p(sub)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(self._p(sub), data)

    def listdir(self, sub: str) -> list[str]:
        """Names (not paths) inside `sub`; [] if it does not exist."""
        if self.local:
            try:
                return sorted(os.listdir(self._p(sub)))
            except FileNotFoundError:
                return []
        p = self._p(sub)
        if not self.fs.exists(p):
            return []
        return sorted(x.rstrip("/").rsplit("/", 1)[-1] for x in self.fs.ls(p, detail=False))

    def remove(self, sub: str) -> None:
        """Delete a file or a directory tree; missing is fine."""
        p = self._p(sub)
        if self.local:
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.remove(p)
        elif self.fs.exists(p):
            self.fs.rm(p, recursive=True)

    def age_seconds(self, sub: str) -> float:
        """Seconds since `sub` was last modified (inf when unknown)."""
        p = self._p(sub)
        try:
            if self.local:
                return time.time() - os.stat(p).st_mtime
            mod = self.fs.modified(p)
            return time.time() - mod.timestamp()
        except Exception:
            return float("inf")

    def files(self) -> list[tuple[str, int]]:
        """Every file under the root with its size (for `cache info` and the benchmark)."""
        out = []
        if self.local:
            for d, _, names in os.walk(self.root):
                for n in names:
                    p = os.path.join(d, n)
                    out.append((os.path.relpath(p, self.root), os.path.getsize(p)))
        else:
            for p, info in self.fs.find(self.root, detail=True).items():
                out.append((p[len(self.root):].lstrip("/"), int(info.get("size", 0))))
        return sorted(out)


# -- fragments ------------------------------------------------------------------------------------
def new_fragment_id(group: str, rank: int) -> str:
    return f"{group}-r{rank}-{time.time_ns():016x}-{uuid.uuid4().hex[:8]}"


def fragment_group_of(fragment_id: str) -> str:
    return fragment_id.split("-r", 1)[0]


def _layout(shape: tuple[int, ...], itemsize: int, raw: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards) for an array of `shape`, split along rows only.

    raw (uncompressed) arrays: plain chunks of up to SHARD_BYTES, one file each, read straight into
    the destination (see read_rows_into) and sliceable by byte offset, so no inner chunks needed.
    Compressed tables: ~1 MiB inner chunks inside shards of up to SHARD_BYTES."""
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    n = max(1, shape[0])
    trail = tuple(max(1, s) for s in shape[1:])
    if raw:
        return (max(1, min(n, SHARD_BYTES // row)),) + trail, None
    chunk_rows = max(1, min(n, CHUNK_BYTES // row))
    chunks = (chunk_rows,) + trail
    if chunk_rows >= n:
        return chunks, None
    shard_rows = max(chunk_rows, (SHARD_BYTES // row) // chunk_rows * chunk_rows)
    shard_rows = min(shard_rows, -(-n // chunk_rows) * chunk_rows)
    return chunks, (shard_rows,) + chunks[1:]


def write_fragment(loc: Location, fragment_id: str, arrays: dict[str, np.ndarray], hook=None) -> None:
    """Write the data of one fragment (not yet visible: its manifest is written after)."""
    g = zarr.open_group(loc.zarr_target(f"{FRAGMENTS}/{fragment_id}"), mode="w", zarr_format=3)
    for name, a in arrays.items():
        # Float features are noise to a compressor: store them raw so loading runs at disk speed.
        raw = a.dtype.kind == "f" and a.dtype.itemsize <= 2
        chunks, shards = _layout(a.shape, a.dtype.itemsize, raw)
        compressors = None if raw else zarr.codecs.ZstdCodec(level=1)
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, shards=shards,
                           compressors=compressors, fill_value=0)
        if a.size:
            z[...] = a
        if hook is not None:
            hook(fragment_id, name)


def open_fragment_array(loc: Location, fragment_id: str, name: str):
    return zarr.open_array(loc.zarr_target(f"{FRAGMENTS}/{fragment_id}/{name}"), mode="r")


def _plain_chunk_rows(z) -> int | None:
    """Rows per chunk if `z` stores each chunk as raw little-endian C-order bytes (bytes codec
    only, no compressor, no sharding, chunks spanning the trailing dims), else None."""
    md = z.metadata
    codecs = getattr(md, "codecs", ())
    if len(codecs) != 1 or type(codecs[0]).__name__ != "BytesCodec" or sys.byteorder != "little":
        return None
    endian = getattr(codecs[0], "endian", None)
    if endian is not None and getattr(endian, "value", endian) != "little" and z.dtype.itemsize > 1:
        return None
    cs = tuple(md.chunk_grid.chunk_shape)
    if z.ndim == 0 or cs[1:] != tuple(max(1, s) for s in z.shape[1:]):
        return None
    return cs[0]


def read_rows_into(z, start: int, stop: int, out: np.ndarray, local_dir: str | None = None) -> None:
    """Copy rows [start, stop) of zarr array `z` into the contiguous numpy array `out`.

    For a local array of raw chunks (features) the chunk files are read with readinto straight into
    `out`: one copy from the page cache, as fast as reading the files (zarr itself would read into a
    buffer and copy again)."""
    if stop <= start:
        return
    rows = _plain_chunk_rows(z) if local_dir is not None and out.flags.c_contiguous else None
    if rows is not None and z.dtype == out.dtype:
        rowbytes = out.dtype.itemsize * int(np.prod(out.shape[1:], dtype=np.int64))
        flat = out.reshape(-1).view(np.uint8)
        for c in range(start // rows, (stop - 1) // rows + 1):
            c0 = c * rows
            a, b = max(start, c0), min(stop, c0 + rows)
            dest = flat[(a - start) * rowbytes:(b - start) * rowbytes]
            key = z.metadata.encode_chunk_key((c,) + (0,) * (z.ndim - 1))
            try:
                with open(os.path.join(local_dir, *key.split("/")), "rb", buffering=0) as f:
                    f.seek((a - c0) * rowbytes)
                    got = f.readinto(dest)
            except FileNotFoundError:  # chunk never written: all fill value
                out[a - start:b - start] = z.metadata.fill_value
                continue
            if got != len(dest):
                raise OSError(f"{local_dir}/{key}: short chunk ({got} of {len(dest)} bytes)")
        return
    from zarr.core.buffer import cpu

    if out.flags.c_contiguous:
        z.get_basic_selection(slice(start, stop), out=cpu.NDBuffer.from_numpy_array(out))
    else:
        out[...] = z[start:stop]


def fragment_array_dir(loc: Location, fragment_id: str, name: str) -> str | None:
    """Local directory of a fragment array (None for remote stores)."""
    return loc._p(f"{FRAGMENTS}/{fragment_id}/{name}") if loc.local else None


def list_manifests(loc: Location) -> list[dict]:
    """All committed manifests minus the superseded ones (see STORE_SCHEMA.md, compaction)."""
    mans = []
    for name in loc.listdir(COMMITS):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            mans.append(loc.read_json(f"{COMMITS}/{name}"))
        except FileNotFoundError:  # removed by a concurrent compaction
            continue
    gone = {s for m in mans for s in m.get("supersedes", [])}
    return sorted((m for m in mans if m["fragment"] not in gone), key=lambda m: m["fragment"])


def committed_ids(loc: Location) -> set[str]:
    return {n[:-5] for n in loc.listdir(COMMITS) if n.endswith(".json") and not n.startswith(".")}
