"""A split's tensors, batched: from store tables to `HeadInput` batches (every head, `linear` too).

`GraphData` is one split's selected actors, objects and keyframes as flat tensors on one device
(the whole split stays there when it fits: AVA's train split of pooled features is ~4 GB in
float16). `GraphData.batch(query_kf, radius)` builds the input of a head for a set of query
keyframes: it adds every keyframe of the same video within `radius` seconds, found by (video,
timestamp) and never by position, so a head's output for the query actors is the one it would
give on the whole video. `GraphData.training_batches` does the same for a whole epoch's batches:
their indices in one vectorised pass (`plan_batches`), gathered a chunk of batches at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from stagecache.core.timekeys import TIME_EPS as _EPS  # timestamps compare with millisecond tolerance
from stagecache.extract.store import LEVELS
from stagecache.heads.batch import HeadInput

# actor_extras key of a per-actor relation bank (ACFB); batches then also carry BANK_KF.
BANK_MAPS = "bank_maps"
BANK_KF = "bank_kf"
# Features gathered per chunk of training batches (GraphData.training_batches): a chunk holds
# hundreds of a small head's batches (its per-array gather and index copy amortised over them) and
# one or two of STAGE's at I3D dims, whose copies stay in cache and whose memory stays bounded.
CHUNK_BYTES = 4 << 20


def ranges_to_indices(lo, hi) -> np.ndarray:
    """Concatenate the integer ranges [lo_i, hi_i) without a Python loop (host arrays: batch
    indices are built on the host, where numpy's per-call cost is a fraction of torch's)."""
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total)


def window_bounds(kf_video: np.ndarray, kf_time: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """For keyframes sorted by (video, time): [lo, hi) of the keyframes of the same video within radius."""
    span = float(kf_time.max() - kf_time.min()) + 2 * radius + 10.0 if len(kf_time) else 1.0
    key = kf_video.astype(np.float64) * span + (kf_time - (kf_time.min() if len(kf_time) else 0.0))
    if np.any(np.diff(key) < -_EPS):
        raise ValueError("keyframes must be sorted by (video, timestamp)")
    lo = np.searchsorted(key, key - radius - _EPS, side="left")
    hi = np.searchsorted(key, key + radius + _EPS, side="right")
    return lo.astype(np.int64), hi.astype(np.int64)


@dataclass
class GraphData:
    """One split, filtered to the actors a run uses, on one device."""

    video_names: list[str]
    kf_video: Tensor  # (K,) long
    kf_time: Tensor  # (K,) float64
    actor_offset: Tensor  # (K+1,) long, into the selected actors
    object_offset: Tensor  # (K+1,) long
    actor_feat: Tensor  # (A, C) float16/float32
    actor_box: Tensor  # (A, 4)
    actor_labels: Tensor  # (A, L) uint8 multi-hot
    actor_score: Tensor  # (A,)
    actor_is_gt: Tensor  # (A,) bool
    actor_track: Tensor  # (A,) long
    actor_row: Tensor  # (A,) long: row in the store's actor table (to write results back)
    object_feat: Tensor  # (O, D)
    object_box: Tensor  # (O, 4)
    object_class: Tensor  # (O,) long
    actor_roi: Tensor | None = None  # (A, C, k, k)
    actor_temporal: Tensor | None = None  # (A, T, C)
    context: Tensor | None = None  # (K, C, H, W)
    actor_extras: dict[str, Tensor] = field(default_factory=dict)  # per-actor arrays passed in HeadInput.extras
    _bounds: dict[float, tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)  # host index per radius

    @property
    def num_keyframes(self) -> int:
        return int(self.kf_video.shape[0])

    @property
    def num_actors(self) -> int:
        return int(self.actor_feat.shape[0])

    @property
    def device(self) -> torch.device:
        return self.actor_feat.device

    def actor_kf(self) -> Tensor:
        """(A,) keyframe index of every selected actor."""
        counts = self.actor_offset[1:] - self.actor_offset[:-1]
        return torch.repeat_interleave(torch.arange(self.num_keyframes, device=self.device), counts)

    def query_keyframes(self) -> Tensor:
        """Keyframes with at least one selected actor: the ones a run predicts."""
        counts = self.actor_offset[1:] - self.actor_offset[:-1]
        return torch.nonzero(counts > 0).flatten()

    def _host_index(self, radius: float) -> tuple[np.ndarray, ...]:
        """(lo, hi, actor_offset, object_offset) on the host, built once per split and radius: batch
        indices are computed there, so a step on a GPU does no index work (or sync) on the device."""
        if radius not in self._bounds:
            lo, hi = window_bounds(self.kf_video.cpu().numpy(), self.kf_time.cpu().numpy(), radius)
            self._bounds[radius] = (lo, hi, self.actor_offset.cpu().numpy(), self.object_offset.cpu().numpy())
        return self._bounds[radius]

    def batch(self, query_kf: Tensor, radius: float, dtype: torch.dtype = torch.float32) -> tuple[HeadInput, Tensor]:
        """HeadInput for `query_kf` plus context within `radius`; also returns the actor rows (into
        this GraphData) of the batch's actors, in batch order."""
        b = self.training_batch(query_kf, radius, dtype)
        return b.x, b.rows

    def training_batch(self, query_kf: Tensor, radius: float, dtype: torch.dtype = torch.float32) -> "Batch":
        """`batch` plus the positions of the query actors in it and their labels (one batch of
        `training_batches`)."""
        return next(self.training_batches([query_kf], radius, dtype))

    def training_batches(self, batches: list[Tensor], radius: float, dtype: torch.dtype = torch.float32, *,
                         device: torch.device | None = None, actor_labels: bool = False,
                         chunk_bytes: int = CHUNK_BYTES) -> Iterator["Batch"]:
        """The `Batch` of each set of query keyframes in `batches`, in order, on `device` (default:
        the split's). Every index of every batch is built on the host in one vectorised pass
        (`plan_batches`); the batches are then gathered a chunk of consecutive batches (about
        `chunk_bytes` of features) at a time, one index copy and one gather per array per chunk,
        and each batch is a slice (a view) of its chunk: per step no index work, no gather, no
        host-to-device copy, and the tensors are the ones a gather per batch would give."""
        device = self.device if device is None else torch.device(device)
        plan = plan_batches(self._host_index(radius), self.num_keyframes, batches)
        # Bytes gathered per actor / object / keyframe: the features plus ~64 / 48 / 16 bytes of
        # boxes, indices and labels (a budget, not an exact count).
        per_actor = sum(_row_bytes(t, dtype) for t in (self.actor_feat, self.actor_roi, self.actor_temporal))
        cost = plan.counts[:, 1] * (per_actor + 64) + plan.counts[:, 2] * (_row_bytes(self.object_feat, dtype) + 48)
        cost = cost + plan.counts[:, 0] * (_row_bytes(self.context, dtype) + 16)
        starts = np.cumsum(cost) - cost
        chunk_of = starts // max(int(chunk_bytes), 1)  # batches starting in one budget window share a chunk
        bounds = np.append(np.flatnonzero(np.diff(chunk_of, prepend=-1)), len(cost))
        ends = np.concatenate((np.zeros((1, 4), dtype=np.int64), np.cumsum(plan.counts, 0)))  # (B+1, 4)
        for b0, b1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            yield from self._chunk(plan, ends[b0], ends[b1], plan.counts[b0:b1], dtype, device, actor_labels)

    def _chunk(self, plan: "BatchPlan", lo: np.ndarray, hi: np.ndarray, counts: np.ndarray, dtype: torch.dtype,
               device: torch.device, with_labels: bool) -> Iterator["Batch"]:
        """The batches of one chunk: flat ranges [lo, hi) of the plan's (keyframe, actor, object,
        query) arrays; `counts` (B_c, 4) their sizes per batch."""
        k, a, o, q = (slice(int(x), int(y)) for x, y in zip(lo, hi))
        parts = [plan.kf[k], plan.rows[a], plan.orows[o], plan.actor_kf[a], plan.object_kf[o],
                 plan.query_pos[q], plan.is_query[a], plan.target_rows[q]]
        flat = torch.from_numpy(np.concatenate(parts))
        if self.device.type == "cuda":
            flat = flat.pin_memory()
        # One host-to-device copy for every index of the chunk.
        flat = flat.to(self.device, non_blocking=True)
        kf, rows, orows, actor_kf, object_kf, query_pos, is_query, target_rows = flat.split([len(p) for p in parts])

        def f(t: Tensor | None, idx: Tensor) -> Tensor | None:
            return None if t is None else t.index_select(0, idx).to(dtype)

        per_kf = {"kf_video": self.kf_video[kf], "kf_time": self.kf_time[kf].to(torch.float32),
                  "context": f(self.context, kf)}
        per_actor = {"actor_feat": f(self.actor_feat, rows), "actor_box": self.actor_box[rows].float(),
                     "actor_kf": actor_kf, "is_query": is_query.bool(), "actor_track": self.actor_track[rows],
                     "actor_roi": f(self.actor_roi, rows), "actor_temporal": f(self.actor_temporal, rows),
                     "rows": rows, "actor_labels": self.actor_labels[rows] if with_labels else None}
        per_actor |= {"extra:" + name: v[rows] for name, v in self.actor_extras.items()}
        per_object = {"object_feat": f(self.object_feat, orows), "object_box": self.object_box[orows].float(),
                      "object_kf": object_kf, "object_class": self.object_class[orows]}
        per_query = {"query_pos": query_pos, "target": self.actor_labels[target_rows]}
        cols = {}
        for group, sizes in ((per_kf, counts[:, 0]), (per_actor, counts[:, 1]), (per_object, counts[:, 2]),
                             (per_query, counts[:, 3])):
            sizes = sizes.tolist()
            for name, t in group.items():
                if t is not None and device != self.device and name != "rows":  # rows index this split
                    t = t.to(device, non_blocking=True)
                cols[name] = [None] * len(sizes) if t is None else t.split(sizes)
        extras = [name for name in cols if name.startswith("extra:")]
        for i in range(len(counts)):
            x = HeadInput(
                kf_video=cols["kf_video"][i], kf_time=cols["kf_time"][i], actor_feat=cols["actor_feat"][i],
                actor_box=cols["actor_box"][i], actor_kf=cols["actor_kf"][i], is_query=cols["is_query"][i],
                object_feat=cols["object_feat"][i], object_box=cols["object_box"][i],
                object_kf=cols["object_kf"][i], object_class=cols["object_class"][i],
                actor_track=cols["actor_track"][i], actor_roi=cols["actor_roi"][i],
                actor_temporal=cols["actor_temporal"][i], context=cols["context"][i],
                extras={name[6:]: cols[name][i] for name in extras},
            )
            if BANK_MAPS in x.extras:
                # An actor-level bank (ACAR's ACFB) holds one entry per batch actor: its keyframe index
                # is the actor's, so heads find each entry's video and time by (kf_video, kf_time).
                x.extras[BANK_KF] = x.actor_kf
            yield Batch(x, cols["rows"][i], cols["query_pos"][i], cols["target"][i], cols["actor_labels"][i])


def _row_bytes(t: Tensor | None, dtype: torch.dtype) -> int:
    """Bytes of one gathered row of `t` (floating arrays are gathered as `dtype`)."""
    if t is None or t.shape[0] == 0:
        return 0
    return t[0].numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())


@dataclass(frozen=True)
class BatchPlan:
    """Every index of a list of batches, flat in batch order (host arrays, int64)."""

    kf: np.ndarray  # (sum K_b,) split keyframes of each batch, sorted within a batch
    rows: np.ndarray  # (sum A_b,) actor rows
    orows: np.ndarray  # (sum O_b,) object rows
    actor_kf: np.ndarray  # (sum A_b,) keyframe of each actor, local to its batch
    object_kf: np.ndarray  # (sum O_b,)
    query_pos: np.ndarray  # (sum A_q,) positions of the query actors among their batch's actors
    is_query: np.ndarray  # (sum A_b,) 1 for a query keyframe's actor
    target_rows: np.ndarray  # (sum A_q,) actor rows of the query actors
    counts: np.ndarray  # (B, 4): K_b, A_b, O_b, A_q of each batch


def plan_batches(host_index: tuple[np.ndarray, ...], num_kf: int, batches: list[Tensor]) -> BatchPlan:
    """`BatchPlan` of `batches` (query keyframes each) from `GraphData._host_index`, in one
    vectorised pass: a batch's keyframes are the union of its queries' windows [lo, hi)."""
    lo, hi, a_off, o_off = host_index
    n = len(batches)
    sizes = np.array([len(b) for b in batches], dtype=np.int64)
    q = torch.cat(list(map(torch.as_tensor, batches))).cpu().numpy().astype(np.int64) if n else np.zeros(0, np.int64)
    q_batch = np.repeat(np.arange(n, dtype=np.int64), sizes)
    # (batch, keyframe) as one key: the sorted unique keys are each batch's sorted keyframes, batch by batch.
    key = np.unique(ranges_to_indices(lo[q], hi[q]) + np.repeat(q_batch * num_kf, hi[q] - lo[q]))
    kf_batch, kf = np.divmod(key, max(num_kf, 1))
    n_kf = np.bincount(kf_batch, minlength=n)
    local = np.arange(len(kf)) - (np.cumsum(n_kf) - n_kf)[kf_batch]
    a_n, o_n = a_off[kf + 1] - a_off[kf], o_off[kf + 1] - o_off[kf]
    rows = ranges_to_indices(a_off[kf], a_off[kf + 1])
    actor_batch = np.repeat(kf_batch, a_n)
    n_a = np.bincount(actor_batch, minlength=n)
    is_query = np.repeat(np.isin(key, q_batch * num_kf + q), a_n)
    qa = np.flatnonzero(is_query)
    query_pos = qa - (np.cumsum(n_a) - n_a)[actor_batch[qa]]
    counts = np.stack((n_kf, n_a, np.bincount(np.repeat(kf_batch, o_n), minlength=n),
                       np.bincount(actor_batch[qa], minlength=n)), 1).astype(np.int64)
    return BatchPlan(kf, rows, ranges_to_indices(o_off[kf], o_off[kf + 1]), np.repeat(local, a_n),
                     np.repeat(local, o_n), query_pos, is_query.astype(np.int64), rows[qa], counts.reshape(n, 4))


@dataclass
class Batch:
    """A head's input for some query keyframes, with where its actors come from."""

    x: HeadInput
    rows: Tensor  # (A_b,) long: actor rows into the GraphData, in batch order
    query_pos: Tensor  # (A_q,) long: positions of the query keyframes' actors among them
    target: Tensor  # (A_q, L) uint8: multi-hot labels of the query actors
    actor_labels: Tensor | None = None  # (A_b, L) labels of every actor, when asked for (auxiliary losses)


SAMPLINGS = ("blocks", "random")


def epoch_batches(queries: Tensor, batch_size: int, sampling: str, seed: int, epoch: int) -> list[Tensor]:
    """One training epoch's query keyframes cut into batches (host tensors), a function of (seed,
    epoch) only, so a resumed run sees the same batches as an uninterrupted one.

    "blocks" (`--sampling blocks`; TrainArgs' default is "random"): the queries in (video, time) order, which is keyframe order, rotated by a
    seeded offset in [0, batch_size) so the block boundaries move between epochs, cut into blocks
    of `batch_size` consecutive queries, blocks in seeded random order. Consecutive keyframes are
    each other's temporal neighbours, so a block's context (every keyframe within the head's
    radius) is gathered and computed once for all its queries: a block of 6 needs 6 + 2 * radius
    keyframes, 6 random queries up to 6 * (1 + 2 * radius). Outputs stay exact (the batch holds
    every neighbour of every query); a block may span the end of one video and the start of the
    next. This is how the official STAGE code samples (sorted clips, rotation per epoch, shuffled
    blocks of batch_size clips).
    "random": a seeded permutation of the queries cut into batches (independent keyframes).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    queries = queries.cpu()
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    if sampling == "random":
        order = queries[torch.randperm(len(queries), generator=gen)]
        return list(order.split(batch_size))
    offset = int(torch.randint(batch_size, (1,), generator=gen)) if len(queries) > batch_size else 0
    blocks = torch.roll(torch.sort(queries).values, -offset).split(batch_size)
    return [blocks[i] for i in torch.randperm(len(blocks), generator=gen).tolist()]


def build_graph_data(
    tables,
    *,
    backbones: list[str],
    combine: str,
    select: np.ndarray,
    levels: frozenset[str] = frozenset(),
    object_feature: str | None = "base/object_feature",
    track_array: str = "base/actor_track",
    num_object_classes: int = 0,
    device: torch.device | str = "cpu",
) -> GraphData:
    """Filter a store's `Tables` to the selected actors and move it to `device`.

    backbones: groups whose `actor_pooled` is the actor feature; with two, `combine` is "mean"
    (STAGE Table 3 averages SlowFast 16x8 and 8x8 features) or "concat".
    """
    data = tables.data
    sel = torch.from_numpy(np.asarray(select, dtype=bool))
    rows = torch.nonzero(sel).flatten()
    every = len(rows) == len(sel)

    def take(t: Tensor) -> Tensor:
        # The selected rows; the tensor itself (shared with `tables`, not copied) when that is all
        # of them. index_select, not a boolean mask: ~1.7x faster on a large float16 array.
        return t if every else t.index_select(0, rows)

    kf_count = len(tables.kf_time)
    actor_kf_all = tables.actor_kf
    counts = torch.bincount(actor_kf_all[sel], minlength=kf_count)
    actor_offset = torch.zeros(kf_count + 1, dtype=torch.long)
    actor_offset[1:] = torch.cumsum(counts, 0)

    feats = []
    for b in backbones:
        key = f"{b}/actor_pooled"
        if key not in data:
            raise KeyError(f"store has no features {key!r}; loaded arrays: {sorted(data)}")
        feats.append(take(data[key]))
    if len(feats) == 1:
        actor_feat = feats[0]
    elif combine == "mean":
        if len({f.shape[1] for f in feats}) != 1:
            raise ValueError(f"--combine mean needs equal feature dims, got {[f.shape[1] for f in feats]}")
        actor_feat = (sum(f.float() for f in feats) / len(feats)).to(feats[0].dtype)
    elif combine == "concat":
        actor_feat = torch.cat(feats, dim=1)
    else:
        raise ValueError(f"unknown combine {combine!r}; valid: mean, concat")

    num_objects = int(tables.kf_object_offset[-1])
    if object_feature and object_feature in data and data[object_feature].shape[-1] > 0:
        object_feat = data[object_feature]
    elif num_object_classes > 0:
        # Objects given as boxes and classes only (no detector features): a one-hot of the class is
        # the most a head can know about them.
        cls = data["base/object_class"].long().clamp(0, num_object_classes - 1)
        object_feat = torch.nn.functional.one_hot(cls, num_object_classes).to(torch.float16)
    else:
        object_feat = torch.zeros(num_objects, 0, dtype=torch.float16)

    def level(name: str) -> Tensor | None:
        if name not in levels:
            return None
        key = f"{backbones[0]}/{name}"
        if key not in data:
            raise KeyError(f"the head needs {key!r} but the store does not hold it (extract with --save)")
        return data[key] if name == "kf_context" else take(data[key])

    track = data.get(track_array, data.get("base/actor_track"))
    g = GraphData(
        video_names=list(tables.video_names),
        kf_video=tables.kf_video.long(),
        kf_time=tables.kf_time.double(),
        actor_offset=actor_offset,
        object_offset=tables.kf_object_offset.long(),
        actor_feat=actor_feat,
        actor_box=take(data["base/actor_box"]).float(),
        actor_labels=take(data["base/actor_labels"]),
        actor_score=take(data["base/actor_score"]).float(),
        actor_is_gt=take(data["base/actor_is_gt"]).bool(),
        actor_track=(take(track) if track is not None else torch.full((len(rows),), -1)).long(),
        actor_row=rows,
        object_feat=object_feat,
        object_box=data["base/object_box"].float(),
        object_class=data["base/object_class"].long(),
        **{lv.field: level(lv.array) for lv in LEVELS.values()},  # the store's levels, by HeadInput field
    )
    return _to(g, device)


def _to(g: GraphData, device) -> GraphData:
    for name, value in vars(g).items():
        if isinstance(value, Tensor):
            setattr(g, name, value.to(device))
    g.actor_extras = {k: v.to(device) for k, v in g.actor_extras.items()}
    return g
