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

from stagecache.core.atomic import DiskFullError, atomic_write_bytes, disk_full_guard

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


def read_json_checked(loc: "Location", sub: str, what: str, missing: str | None = None) -> dict:
    """A JSON object the store needs; a damaged one is a StoreError naming the store and the file
    (a missing one too when `missing` is its message; else FileNotFoundError propagates)."""
    try:
        obj = loc.read_json(sub)
    except FileNotFoundError:
        if missing is None:
            raise
        raise StoreError(missing) from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"{loc.display}: {sub} ({what}) is not valid JSON, a damaged file ({e})") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{loc.display}: {sub} ({what}) holds a {type(obj).__name__}, not a JSON object (a damaged file)")
    return obj


def read_root_attrs(loc: "Location") -> dict:
    """The root's `stagecache` attributes, refusing other schema versions."""
    meta = read_json_checked(loc, "zarr.json", "the store root", missing=f"{loc.display}: no feature store here (no zarr.json)")
    attrs = (meta.get("attributes") or {}).get("stagecache") if isinstance(meta.get("attributes"), dict) else None
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


def chunk_rows(shape: tuple[int, ...], itemsize: int) -> int:
    """Rows per chunk: plain chunks of up to CHUNK_MAX_BYTES along rows, spanning the trailing
    dims: one file per chunk, read straight into the destination and sliceable by byte offset
    (lazy access), so neither inner chunks nor shards are needed."""
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    return max(1, min(max(1, shape[0]), CHUNK_MAX_BYTES // row))


def write_fragment(loc: Location, fragment_id: str, arrays: dict[str, np.ndarray], hook=None) -> None:
    """Write the data of one fragment (not yet visible: its manifest is written after; its files'
    sizes and checksums for it: extract/store/integrity.py `fragment_files`)."""
    sub = f"{FRAGMENTS}/{fragment_id}"
    try:
        with disk_full_guard(loc.zarr_target(sub), sum(a.nbytes for a in arrays.values())):
            _write_arrays(loc, sub, fragment_id, arrays, hook)
    except DiskFullError:
        loc.remove(sub)  # uncommitted and ours: give the space back (a kill would leave it to the next writer)
        raise


def _write_arrays(loc: Location, sub: str, fragment_id: str, arrays: dict[str, np.ndarray], hook) -> None:
    g = zarr.open_group(loc.zarr_target(sub), mode="w", zarr_format=3)
    for name, a in arrays.items():
        # Uncompressed: float features are noise to a compressor, and the small tables (< 3 % of
        # the bytes) load faster from raw chunks than through zstd; see STORE_SCHEMA.md. Every
        # chunk is written, zeros too, so a missing chunk file is damage, never "all fill value".
        chunks = (chunk_rows(a.shape, a.dtype.itemsize),) + tuple(max(1, s) for s in a.shape[1:])
        z = g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, compressors=None, filters=None,
                           fill_value=0, config={"write_empty_chunks": True})
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

    def __init__(self, loc: Location, fragment_id: str, name: str, *, strict: bool = False, where: str | None = None,
                 meta: dict | None = None):
        """`strict`: every chunk was written and recorded (a missing one is damage, not fill value);
        `where` names the array in messages; `meta`: its zarr.json, already read and checked against
        the manifest (extract/store/integrity.py `open_array`, what the readers use)."""
        self.loc, self.sub = loc, f"{FRAGMENTS}/{fragment_id}/{name}"
        self._z = None
        self.plain = None
        self.strict = strict
        self.where = where or f"{loc.display}: {self.sub}"
        if loc.local:
            if meta is None:
                meta = read_json_checked(loc, f"{self.sub}/zarr.json", f"array {name!r}")
            self.plain = _plain_layout(meta)
            try:
                self.shape = tuple(meta["shape"])
                self.dtype = np.dtype(meta["data_type"]) if meta["data_type"] in _PLAIN_TYPES else None
            except (KeyError, TypeError):
                raise StoreError(f"{self.where}: {self.sub}/zarr.json is not zarr array metadata") from None
            self.fill = meta.get("fill_value")
        if self.plain is None:
            try:
                self._z = zarr.open_array(loc.zarr_target(self.sub), mode="r")
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{self.where}: {self.sub}/zarr.json is not readable zarr metadata ({e})") from None
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
                except FileNotFoundError:
                    if self.strict:  # every chunk is written and recorded: a missing one is damage
                        raise StoreError(f"{self.where}: chunk file {self.sub}/{key} is missing") from None
                    out[a - start:b - start] = self.fill  # an older writer skipped all-fill chunks
                    continue
                if got != len(dest):
                    raise StoreError(f"{self.where}: chunk file {self.sub}/{key} is short ({got} of {len(dest)} "
                                     f"bytes read at row {a}): a truncated file")
            return
        if self._z is None:
            self._z = zarr.open_array(self.loc.zarr_target(self.sub), mode="r")
        from zarr.core.buffer import cpu

        if out.flags.c_contiguous:
            self._z.get_basic_selection(slice(start, stop), out=cpu.NDBuffer.from_numpy_array(out))
        else:
            out[...] = self._z[start:stop]
