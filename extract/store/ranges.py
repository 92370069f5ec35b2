"""Rows of a store by keyframe range, for a reader that streams a split (pipelines/training/stream.py).

A fragment holds whole videos back to back and each of its arrays is one or a few raw chunk files
(docs/STORE_SCHEMA.md), so the rows of any keyframe range of one video are one contiguous byte
range of each array: one `pread` per chunk file it touches. No layout change is needed for
streaming; `RangeReader` only maps global keyframes to (fragment, rows) and reads.

Consistency: every chunk file of the arrays read is opened when the reader is built and read
through those descriptors. `cache compact` writes the merged fragment before it deletes the old
files, and POSIX keeps an unlinked file readable through an open descriptor, so a reader sees the
store as it was opened for as long as it lives. Arrays not stored as raw local chunks (an fsspec
store, a compressed array) are read through zarr by path; a fragment removed meanwhile is then a
one-line `StoreError`.
"""
from __future__ import annotations

import os
import resource

import numpy as np

from stagecache.extract.store.integrity import open_array
from stagecache.extract.store.io import CHUNK_MAX_BYTES, FRAGMENTS, StoreError, axis_of


class _OpenArray:
    """One fragment array whose chunk files are held open (raw local layout), else a zarr reader."""

    def __init__(self, store, man: dict, name: str):
        loc, fragment_id = store.loc, man["fragment"]
        self.where = f"{store.path}: fragment {fragment_id}, array {name}"
        self.fds: list[int | None] = []
        # The checks every read makes (zarr.json against the manifest, recorded file sizes), in
        # their one home; the reader they return serves arrays not held as raw local chunks.
        self.reader = open_array(loc, man, name)
        strict = bool(man.get("files"))
        self.plain = self.reader.plain  # (rows per chunk, key separator) of a raw local array, else None
        if self.plain is None:
            return
        self.shape, self.fill = self.reader.shape, self.reader.fill
        sub = f"{FRAGMENTS}/{fragment_id}/{name}"
        rows, sep = self.plain
        base = loc._p(sub)
        for c in range(-(-max(self.shape[0], 1) // rows)):
            key = sep.join(["c", str(c)] + ["0"] * (len(self.shape) - 1))
            try:
                self.fds.append(os.open(os.path.join(base, *key.split("/")), os.O_RDONLY))
            except FileNotFoundError:
                if strict:  # the manifest records every chunk file: a missing one is damage
                    raise StoreError(f"{self.where}: chunk file {key} is missing; `cache verify` the store") from None
                self.fds.append(None)  # a chunk never written (older stores): its rows are the fill value

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows [start, stop) into the C-contiguous `out` (shape (stop - start, ...))."""
        if stop <= start:
            return
        if self.plain is None:
            try:
                self.reader.read_into(start, stop, out)
            except FileNotFoundError:
                raise StoreError(f"{self.where}: removed while the split was streamed (a `cache compact` "
                                 "meanwhile?); rerun (with --resume for train-head)") from None
            return
        rows = self.plain[0]
        rowbytes = out.dtype.itemsize * int(np.prod(out.shape[1:], dtype=np.int64))
        flat = out.reshape(-1).view(np.uint8)
        for c in range(start // rows, (stop - 1) // rows + 1):
            c0 = c * rows
            a, b = max(start, c0), min(stop, c0 + rows)
            if self.fds[c] is None:
                out[a - start:b - start] = self.fill
                continue
            dest, pos = flat[(a - start) * rowbytes:(b - start) * rowbytes], (a - c0) * rowbytes
            done = 0
            while done < len(dest):  # pread returns at most ~2 GiB per call
                got = os.preadv(self.fds[c], [dest[done:]], pos + done)
                if got <= 0:
                    raise StoreError(f"{self.where}: chunk {c} is short ({done} of {len(dest)} bytes from row {a})")
                done += got

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds = []


def _chunk_files(shape, dtype) -> int:
    """Chunk files of a fragment array written by `io.write_fragment` (rows of up to CHUNK_MAX_BYTES)."""
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize)
    per = max(1, CHUNK_MAX_BYTES // row)
    return max(1, -(-int(shape[0]) // per))


def _raise_open_file_limit(need: int) -> None:
    """Descriptors for every chunk file read: lift the soft limit towards the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


class RangeReader:
    """The `select`ed arrays ({group: [array, ...]}) of an opened `FeatureStore`, read by global
    keyframe range (the keyframe order of `FeatureStore.load`); rows of the actor / object axis
    are the store's rows of those keyframes, all of them (selection is the caller's)."""

    def __init__(self, store, select: dict[str, list[str]]):
        self.store = store
        self.select = {g: list(n) for g, n in select.items()}
        frags = {(g, f.id): f for g in self.select for f in store.fragments.get(g, [])}
        _raise_open_file_limit(sum(_chunk_files(*f.arrays[n]) for (g, _), f in frags.items()
                                   for n in self.select[g] if n in f.arrays))
        self._arrays: dict[tuple[str, str, str], _OpenArray] = {}
        try:
            for (g, fid), f in frags.items():
                for n in self.select[g]:
                    if n in f.arrays:
                        self._arrays[g, fid, n] = _OpenArray(store, f.man, n)
        except FileNotFoundError as e:
            self.close()
            raise StoreError(f"{store.path}: {e.filename} was removed after the store was opened (a `cache compact` "
                             "meanwhile?); open it again") from None
        # Per video of the store: its first global keyframe.
        self._v_kf = store._goff["kf"]

    def info(self, group: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(row shape, dtype) of an array."""
        shape, dt = self.store.array_info(group)[name]
        return tuple(shape[1:]), np.dtype(dt)

    def rows(self, axis: str, k0: int, k1: int) -> tuple[int, int]:
        """Global rows [r0, r1) of `axis` ("kf", "actor", "object") of keyframes [k0, k1)."""
        off = {"kf": None, "actor": self.store._kf_act, "object": self.store._kf_obj}[axis]
        return (k0, k1) if off is None else (int(off[k0]), int(off[k1]))

    def read(self, group: str, name: str, k0: int, k1: int, out: np.ndarray) -> None:
        """The rows of keyframes [k0, k1) of `group/name` into `out` (C-contiguous, exactly that many
        rows): one contiguous read per video (per chunk file) of the range."""
        st, axis = self.store, axis_of(name)
        src = st._src[group]
        pos = 0
        v = int(st._kf_video[k0]) if k1 > k0 else 0
        while k0 < k1:
            v_end = int(self._v_kf[v + 1])
            a, b = k0, min(k1, v_end)
            f, i = src[st.videos[v]]
            lk = int(f.kf_off[i]) + (a - int(self._v_kf[v]))
            loff = {"kf": None, "actor": f.kf_act, "object": f.kf_obj}[axis]
            r0, r1 = (lk, lk + b - a) if loff is None else (int(loff[lk]), int(loff[lk + b - a]))
            self._arrays[group, f.id, name].read_into(r0, r1, out[pos:pos + r1 - r0])
            pos += r1 - r0
            k0, v = b, v + 1
        if pos != len(out):
            raise StoreError(f"{st.path}: group {group} array {name}: {pos} rows read for a buffer of {len(out)} "
                             "(internal error)")

    def close(self) -> None:
        for a in self._arrays.values():
            a.close()
        self._arrays = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
