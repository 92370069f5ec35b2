"""The streamed `SplitSource`: a split larger than memory, read from the store a chunk at a time.

Only the split's small arrays stay in memory (`graph`: structure, boxes, labels, scores, tracks,
object boxes and classes, with 0-wide feature columns). The feature arrays (actor_pooled,
object_feature, the levels, a bank's maps) are read per chunk of consecutive batches:

- a chunk is the longest run of batches whose keyframes (each query's window of the head's
  temporal radius, as `GraphData.training_batches` gathers it) allocate at most half the budget;
  their keyframes are read as contiguous keyframe ranges (one sequential read per video and array,
  `extract/store/ranges.py`) into a `GraphData` of those keyframes only, the chunk's batches are
  gathered from it exactly as from the whole split, and their rows mapped back to `graph`'s;
- a background thread reads the next chunk while the current one is used (two chunks at most:
  the budget halves), into pinned memory copied to the GPU when the device is CUDA.

Batches hold the same keyframes, actors and objects in the same order as the resident source's, so
with `--sampling blocks` (and in validation and prediction) every loss, weight and score is equal
bit for bit. `--sampling random` differs (`epoch_batches`): each epoch the videos are shuffled into
groups that fit a chunk and each group's queries are permuted and cut into batches, so a batch
draws its keyframes from one group of videos (not the whole split) and a group's last batch may
be short; every query is still seen once per epoch and batches are a function of (seed, epoch).
NaN/Inf in a streamed array is found when its chunk is read (a one-line `NonFiniteError`; the
epoch is the commit point, so nothing written is lost).
"""
from __future__ import annotations

import os
import queue
import signal
import threading
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from stagecache.pipelines.training.sources import NonFiniteError, PreflightError, stream_kill_hook
from stagecache.pipelines.training.split_batches import (BANK_MAPS, CHUNK_BYTES, Batch, GraphData, epoch_batches,
                                                         ranges_to_indices)

_CHUNKS_READ = [0]  # chunks read by this process (STAGECACHE_KILL_AFTER_CHUNKS)


def _lower_priority() -> None:
    """The reader thread yields the CPU to the step's threads (Linux: a thread's own nice value): on
    a machine whose cores the step keeps busy, a reader at the same priority slows every parallel
    op it shares a core with, more than its own work costs."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class GroupedBatches(list):
    """An epoch's batches in groups of videos (random sampling, streamed): `starts` are the indices
    of the batches that open a group, where a chunk is always cut."""

    def __init__(self, batches: list[Tensor], starts: frozenset[int]):
        super().__init__(batches)
        self.starts = starts


class StreamedSource:
    """A split whose feature arrays are read per chunk (module docstring).

    reader: `extract.store.ranges.RangeReader` over the streamed arrays; feats: the backbone
    groups whose actor_pooled are combined by `combine`; levels: {HeadInput field: (group, array)};
    objects: "feature" (base/object_feature), "onehot" (num_object_classes wide) or "none";
    bank: the (group, array) of a bank's maps or None; budget: bytes of chunk buffers it may hold."""

    kind = "streamed"

    def __init__(self, graph: GraphData, reader, *, feats: list[str], combine: str, levels: dict[str, tuple[str, str]],
                 objects: str, num_object_classes: int, bank: tuple[str, str] | None, budget: int,
                 keyframe_bytes: np.ndarray, device: torch.device, role: str = ""):
        self.graph, self.reader = graph, reader
        self.feats, self.combine, self.levels = feats, combine, levels
        self.objects, self.num_object_classes, self.bank = objects, num_object_classes, bank
        self.budget, self.kf_bytes, self.device, self.role = int(budget), keyframe_bytes, torch.device(device), role
        self.live = self.peak = 0  # bytes of chunk buffers allocated and not yet released
        self._lock = threading.Lock()
        self._tally = threading.local()
        self.chunks_read = 0

    @property
    def chunk_budget(self) -> int:
        return self.budget // 2  # the chunk in use and the one being read

    # -- batches ---------------------------------------------------------------------------------
    def epoch_batches(self, queries: Tensor, batch_size: int, sampling: str, seed: int, epoch: int) -> list[Tensor]:
        """`split_batches.epoch_batches` for blocks; for random, shuffled groups of videos (module docstring)."""
        if sampling != "random":
            return epoch_batches(queries, batch_size, sampling, seed, epoch)
        queries = queries.cpu()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        kf_video = self.graph.kf_video.cpu().numpy()
        qv = kf_video[queries.numpy()]
        videos = np.unique(qv)
        vbytes = np.bincount(kf_video, weights=self.kf_bytes, minlength=len(self.graph.video_names))
        batches, starts, group, used = [], set(), [], 0.0

        def close() -> None:
            if group:
                q = queries[torch.from_numpy(np.isin(qv, group))]
                starts.add(len(batches))
                batches.extend(q[torch.randperm(len(q), generator=gen)].split(batch_size))

        for v in videos[torch.randperm(len(videos), generator=gen).numpy()].tolist():
            if group and used + vbytes[v] > self.chunk_budget:
                close()
                group, used = [], 0.0
            group.append(v)
            used += vbytes[v]
        close()
        return GroupedBatches(batches, frozenset(starts))

    def batches(self, batches: list[Tensor], radius: float, dtype: torch.dtype = torch.float32, *,
                device: torch.device | None = None, actor_labels: bool = False,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[Batch]:
        device = self.device if device is None else torch.device(device)
        plan = self._plan(batches, radius)
        for item in self._prefetch(plan, device):
            local, rows, kfs, chunk = item
            del item
            local_batches = [torch.from_numpy(np.searchsorted(kfs, torch.as_tensor(b).cpu().numpy())) for b in chunk]
            for b in local.training_batches(local_batches, radius, dtype, device=device, actor_labels=actor_labels,
                                            chunk_bytes=chunk_bytes):
                b.rows = rows[b.rows]  # rows of the split's graph, as the resident source gives
                yield b
            # Dropped before the next chunk is asked for: only then may the reader start the one after.
            del local, rows

    def _plan(self, batches: list[Tensor], radius: float) -> list[tuple[list[Tensor], np.ndarray]]:
        """Batches cut into chunks: (the chunk's batches, its sorted keyframes), each chunk's
        keyframes allocating at most `chunk_budget` bytes."""
        lo, hi, _, _ = self.graph._host_index(radius)
        starts = batches.starts if isinstance(batches, GroupedBatches) else frozenset()
        mark = np.zeros(len(lo), dtype=bool)
        out, cur, kfs, cost = [], [], [], 0

        def cut() -> None:
            if cur:
                k = np.concatenate(kfs)
                mark[k] = False
                out.append((list(cur), np.sort(k)))

        for i, b in enumerate(batches):
            q = torch.as_tensor(b).cpu().numpy().astype(np.int64)
            k = np.unique(ranges_to_indices(lo[q], hi[q]))
            new = k[~mark[k]]
            c = int(self.kf_bytes[new].sum())
            if cur and (cost + c > self.chunk_budget or i in starts):
                cut()
                cur, kfs, cost = [], [], 0
                new, c = k, int(self.kf_bytes[k].sum())
            if c > self.chunk_budget:
                v = self.graph.video_names[int(self.graph.kf_video[int(q[0])])]
                raise PreflightError(
                    f"{self.role} store {self.reader.store.path}: one batch (queries of video {v}) needs {c} bytes of streamed features, "
                    f"more than a chunk of the memory budget ({self.chunk_budget} bytes); give a larger --memory-budget")
            mark[new] = True
            cur.append(b)
            kfs.append(new)
            cost += c
        cut()
        return out

    # -- reading ---------------------------------------------------------------------------------
    def _account(self, n: int) -> None:
        with self._lock:
            self.live += n
            self.peak = max(self.peak, self.live)
        self._tally.n = getattr(self._tally, "n", 0) + n  # this thread's share: the chunk being read

    def _prefetch(self, plan, device: torch.device):
        """(local GraphData, its rows in `graph`, its keyframes, the chunk's batches) per chunk, read
        one ahead by a background thread; at most two chunks' buffers are alive."""
        ready: queue.Queue = queue.Queue()
        permits = threading.Semaphore(2)
        stop = threading.Event()

        def work() -> None:
            try:
                _lower_priority()
                for chunk, kfs in plan:
                    permits.acquire()
                    if stop.is_set():
                        return
                    local, rows, nbytes = self._read(kfs, device)
                    ready.put((local, rows, kfs, chunk, nbytes))
                ready.put(None)
            except BaseException as e:  # handed to the consumer, raised there
                ready.put(e)

        threading.Thread(target=work, daemon=True, name="stream-reader").start()
        kill = stream_kill_hook()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                _CHUNKS_READ[0] += 1
                self.chunks_read += 1
                if kill and _CHUNKS_READ[0] >= kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                local, rows, kfs, chunk, nbytes = item
                del item
                yield local, rows, kfs, chunk
                del local, rows
                self._account(-nbytes)
                permits.release()
        finally:
            stop.set()
            permits.release()

    def _alloc(self, rows: int, shape: tuple[int, ...], dtype: np.dtype, pin: bool) -> Tensor:
        t = torch.empty((rows,) + tuple(shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=pin)
        self._account(t.numel() * t.element_size())
        return t

    def _read_array(self, group: str, name: str, ranges: np.ndarray, pin: bool) -> Tensor:
        """Rows of keyframe ranges (R, 2) of one array, concatenated, checked finite."""
        shape, dtype = self.reader.info(group, name)
        axis = name.split("_", 1)[0]
        spans = [self.reader.rows(axis, int(a), int(b)) for a, b in ranges]
        out = self._alloc(sum(r1 - r0 for r0, r1 in spans), shape, dtype, pin)
        arr, pos = out.numpy(), 0
        for (a, b), (r0, r1) in zip(ranges, spans):
            self.reader.read(group, name, int(a), int(b), arr[pos:pos + r1 - r0])
            pos += r1 - r0
        if out.is_floating_point() and out.numel():
            lo, hi = torch.aminmax(out)
            if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
                bad = int(torch.nonzero(~torch.isfinite(out.reshape(len(out), -1)).all(1))[0])
                raise NonFiniteError(f"{self.role} store {self.reader.store.path}: group {group}, array {name}: rows "
                                     f"with NaN/Inf (first: row {bad} of keyframes {int(ranges[0][0])}..); re-extract "
                                     "those videos")
        return out

    def _read(self, kfs: np.ndarray, device: torch.device) -> tuple[GraphData, Tensor, int]:
        """A GraphData of keyframes `kfs` (sorted global indices), its rows in `graph`, bytes held."""
        g, pin = self.graph, device.type == "cuda"
        self._tally.n = 0
        cut = np.flatnonzero(np.diff(kfs) != 1) + 1
        ranges = np.stack((kfs[np.r_[0, cut]], kfs[np.r_[cut - 1, len(kfs) - 1]] + 1), 1)  # (R, 2) [k0, k1)
        a_off, o_off = g.actor_offset.numpy(), g.object_offset.numpy()
        grow = ranges_to_indices(a_off[kfs], a_off[kfs + 1])  # graph rows of the chunk's selected actors
        orow = ranges_to_indices(o_off[kfs], o_off[kfs + 1])
        # Position of each selected actor in what is read (every store actor row of the ranges).
        r0 = np.asarray([self.reader.rows("actor", int(a), int(b)) for a, b in ranges], dtype=np.int64).reshape(-1, 2)
        base = np.concatenate(([0], np.cumsum(r0[:, 1] - r0[:, 0])))
        store_rows = g.actor_row.numpy()[grow]
        j = np.searchsorted(r0[:, 0], store_rows, side="right") - 1
        pos = torch.from_numpy(store_rows - r0[j, 0] + base[j]) if len(store_rows) else torch.zeros(0, dtype=torch.long)
        every = len(pos) == int(base[-1])

        def actors(group: str, name: str) -> Tensor:
            raw = self._read_array(group, name, ranges, pin)
            if every:
                return raw
            sel = raw.index_select(0, pos)
            self._account(sel.numel() * sel.element_size() - raw.numel() * raw.element_size())
            return sel.pin_memory() if pin else sel

        feats = [actors(b, "actor_pooled") for b in self.feats]
        if len(feats) == 1:
            feat = feats[0]
        elif self.combine == "mean":  # as split_batches.build_graph_data
            feat = (sum(f.float() for f in feats) / len(feats)).to(feats[0].dtype)
        else:
            feat = torch.cat(feats, dim=1)
        if len(feats) > 1:
            self._account(feat.numel() * feat.element_size() - sum(f.numel() * f.element_size() for f in feats))
        del feats
        grow_t, orow_t, kf_t = torch.from_numpy(grow), torch.from_numpy(orow), torch.from_numpy(kfs)
        if self.objects == "feature":
            obj = self._read_array("base", "object_feature", ranges, pin)
        elif self.objects == "onehot":
            cls = g.object_class[orow_t].clamp(0, self.num_object_classes - 1)
            obj = torch.nn.functional.one_hot(cls, self.num_object_classes).to(torch.float16)
            self._account(obj.numel() * obj.element_size())
        else:
            obj = torch.zeros(len(orow), 0, dtype=torch.float16)
        lv = {}
        for fname, (group, name) in self.levels.items():
            lv[fname] = self._read_array(group, name, ranges, pin) if name.startswith("kf_") else actors(group, name)
        counts = lambda off: torch.from_numpy(np.concatenate(([0], np.cumsum(off[kfs + 1] - off[kfs]))))  # noqa: E731
        local = GraphData(
            video_names=g.video_names, kf_video=g.kf_video[kf_t], kf_time=g.kf_time[kf_t],
            actor_offset=counts(a_off), object_offset=counts(o_off), actor_feat=feat,
            actor_box=g.actor_box[grow_t], actor_labels=g.actor_labels[grow_t], actor_score=g.actor_score[grow_t],
            actor_is_gt=g.actor_is_gt[grow_t], actor_track=g.actor_track[grow_t], actor_row=g.actor_row[grow_t],
            object_feat=obj, object_box=g.object_box[orow_t], object_class=g.object_class[orow_t],
            actor_roi=lv.get("actor_roi"), actor_temporal=lv.get("actor_temporal"), context=lv.get("context"),
        )
        if self.bank is not None:
            local.actor_extras[BANK_MAPS] = actors(*self.bank)
        if device.type != "cpu":
            for name, value in vars(local).items():
                if isinstance(value, Tensor):
                    setattr(local, name, value.to(device, non_blocking=True))
            local.actor_extras = {k: v.to(device, non_blocking=True) for k, v in local.actor_extras.items()}
            grow_t = grow_t.to(device, non_blocking=True)
        return local, grow_t, self._tally.n
