"""Low-level I/O of the feature store: where files live, atomic JSON, fragments and manifests.

The layout is specified in docs/STORE_SCHEMA.md. This module knows nothing about actors or
keyframes; `extract/store/writer.py` and `read.py` build the writer and reader on top of it.
"""
from __future__ import annotations

from stagecache.core.errors import UserError

import json
import os
import shutil
import sys
import time
import uuid
from typing import Any

import numpy as np
import zarr

from stagecache.core.atomic import atomic_write_bytes

SCHEMA_VERSION = 1

COMMITS = "commits"
FRAGMENTS = "fragments"
META = "meta"

# Largest chunk file: a 64 MiB fragment is one file per array; whole-split fragments (write_group,
# compaction) stay a handful of files.
CHUNK_MAX_BYTES = 256 << 20


class StoreError(UserError, RuntimeError):
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
            atomic_write_bytes(path, data)  # temp `.tmp-<hex>-<name>` + fsync + os.replace
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
                    try:
                        out.append((os.path.relpath(p, self.root), os.path.getsize(p)))
                    except OSError:  # removed meanwhile (another writer's temporary file)
                        pass
        else:
            for p, info in self.fs.find(self.root, detail=True).items():
                out.append((p[len(self.root):].lstrip("/"), int(info.get("size", 0))))
        return sorted(out)


# -- fragments ------------------------------------------------------------------------------------
def new_fragment_id(group: str, rank: int) -> str:
    return f"{group}-r{rank}-{time.time_ns():016x}-{uuid.uuid4().hex[:8]}"


def fragment_group_of(fragment_id: str) -> str:
    return fragment_id.split("-r", 1)[0]


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Plain chunks of up to CHUNK_MAX_BYTES along rows, spanning the trailing dims: one file per
    chunk, read straight into the destination and sliceable by byte offset (lazy access), so
    neither inner chunks nor shards are needed."""
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    return (max(1, min(max(1, shape[0]), CHUNK_MAX_BYTES // row)),) + tuple(max(1, s) for s in shape[1:])


def write_fragment(loc: Location, fragment_id: str, arrays: dict[str, np.ndarray], hook=None) -> None:
    """Write the data of one fragment (not yet visible: its manifest is written after)."""
    g = zarr.open_group(loc.zarr_target(f"{FRAGMENTS}/{fragment_id}"), mode="w", zarr_format=3)
    for name, a in arrays.items():
        # Uncompressed: float features are noise to a compressor, and the small tables (< 3 % of
        # the bytes) load faster from raw chunks than through zstd; see STORE_SCHEMA.md.
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=_chunks(a.shape, a.dtype.itemsize),
                           compressors=None, filters=None, fill_value=0)
        if a.size:
            z[...] = a
        if hook is not None:
            hook(fragment_id, name)


_PLAIN_TYPES = {"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                "float16", "float32", "float64"}


def _plain_layout(meta: dict) -> tuple[int, str] | None:
    """(rows per chunk, separator) if the zarr v3 array metadata stores each chunk as raw
    little-endian C-order bytes (bytes codec only: no compressor, no sharding) with chunks spanning
    the trailing dims; else None (read through zarr)."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("data_type") not in _PLAIN_TYPES or sys.byteorder != "little":
            return None
        codecs = meta["codecs"]
        if len(codecs) != 1 or codecs[0]["name"] != "bytes":
            return None
        if (codecs[0].get("configuration") or {}).get("endian", "little") != "little":
            return None
        if meta["chunk_grid"]["name"] != "regular" or meta.get("storage_transformers"):
            return None
        cs = meta["chunk_grid"]["configuration"]["chunk_shape"]
        shape = meta["shape"]
        if not shape or list(cs[1:]) != [max(1, x) for x in shape[1:]]:
            return None
        enc = meta["chunk_key_encoding"]
        if enc["name"] != "default":
            return None
        return int(cs[0]), (enc.get("configuration") or {}).get("separator", "/")
    except (KeyError, TypeError, IndexError):
        return None


class ArrayReader:
    """Rows of one fragment array. Local raw arrays are read with readinto straight into the
    destination (one copy from the page cache, as fast as reading the files; zarr would read into
    a buffer and copy again); anything else goes through zarr."""

    def __init__(self, loc: Location, fragment_id: str, name: str):
        self.loc, self.sub = loc, f"{FRAGMENTS}/{fragment_id}/{name}"
        self._z = None
        self.plain = None
        if loc.local:
            meta = loc.read_json(f"{self.sub}/zarr.json")
            self.plain = _plain_layout(meta)
            self.shape = tuple(meta["shape"])
            self.dtype = np.dtype(meta["data_type"]) if meta["data_type"] in _PLAIN_TYPES else None
            self.fill = meta.get("fill_value")
        if self.plain is None:
            self._z = zarr.open_array(loc.zarr_target(self.sub), mode="r")
            self.shape, self.dtype = self._z.shape, self._z.dtype

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy rows [start, stop) into the numpy array `out` (shape (stop-start, ...))."""
        if stop <= start:
            return
        if self.plain is not None and out.flags.c_contiguous and out.dtype == self.dtype:
            rows, sep = self.plain
            rowbytes = out.dtype.itemsize * int(np.prod(out.shape[1:], dtype=np.int64))
            flat = out.reshape(-1).view(np.uint8)
            base = self.loc._p(self.sub)
            for c in range(start // rows, (stop - 1) // rows + 1):
                c0 = c * rows
                a, b = max(start, c0), min(stop, c0 + rows)
                dest = flat[(a - start) * rowbytes:(b - start) * rowbytes]
                key = sep.join(["c", str(c)] + ["0"] * (len(self.shape) - 1))
                path = os.path.join(base, *key.split("/"))
                try:
                    with open(path, "rb", buffering=0) as f:
                        f.seek((a - c0) * rowbytes)
                        got = f.readinto(dest)
                except FileNotFoundError:  # chunk never written: all fill value
                    out[a - start:b - start] = self.fill
                    continue
                if got != len(dest):
                    raise OSError(f"{path}: short chunk ({got} of {len(dest)} bytes)")
            return
        if self._z is None:
            self._z = zarr.open_array(self.loc.zarr_target(self.sub), mode="r")
        from zarr.core.buffer import cpu

        if out.flags.c_contiguous:
            self._z.get_basic_selection(slice(start, stop), out=cpu.NDBuffer.from_numpy_array(out))
        else:
            out[...] = self._z[start:stop]
