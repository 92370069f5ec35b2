"""Graph helpers for relation heads: keyframe linking, block-sparse graphs, blocked segment softmax.

A batch holds many keyframes (many videos). Graph edges only ever join nodes of *linked*
keyframes (same video, close in time), so the adjacency is block-sparse at keyframe granularity.
We store it as an edge list over keyframe pairs `(pair_tgt[p], pair_src[p])`, each pair a dense
`n_max x n_max` node block (nodes padded per keyframe to `n_max`, with a boolean mask). Per-edge
quantities are then `(P, ..., n_max, n_max)` tensors of scalars, and aggregation is one batched
matmul per pair, so the `N x N x 2F` tensor of pairwise concatenations is never built and no
`E x F` message tensor is built either.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stagecache.core.timekeys import TIME_EPS  # store timestamps are milliseconds; anything closer is "equal"


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16 (autocast), else unchanged (float64 stays)."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a matmul on float32 `x` runs in: autocast's where it is on for x's device."""
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def take(x: Tensor, index: Tensor) -> Tensor:
    """`x[index]` for an integer tensor `index` of any shape, as an index_select: its backward is
    an index_add over whole rows, several times faster on the CPU than advanced indexing's
    index_put (3.6 -> 1.5 ms forward + backward for a (26, 29, 1028) float32 gather, torch 2.14)."""
    return torch.index_select(x, 0, index.reshape(-1)).view(tuple(index.shape) + tuple(x.shape[1:]))


def take_rows(x: Tensor, rows: Tensor) -> Tensor:
    """`take(x, rows)` for sorted distinct `rows` (torch.nonzero's); `x` itself when they are all of
    its rows (an identity gather would copy x forward and scatter its gradient back)."""
    return x if rows.numel() == x.shape[0] else take(x, rows)


def link_keyframes(kf_video: Tensor, kf_time: Tensor, radius: float | None) -> tuple[Tensor, Tensor]:
    """Pairs of linked keyframes, both directions, self pairs included.

    Keyframes i and j are linked iff `kf_video[i] == kf_video[j]` and
    `|kf_time[i] - kf_time[j]| <= radius + TIME_EPS`. `radius=None` links each keyframe to
    itself only (no temporal edges). Never uses batch position, only (video, time).
    Returns `(tgt, src)`, each (P,) long.
    """
    k = kf_video.shape[0]
    dev = kf_video.device
    self_idx = torch.arange(k, device=dev)
    if radius is None or k < 2:
        return self_idx, self_idx
    # Sort by (video, time): in that order, if no pair at offset d is linked, none at d+1 is.
    order = torch.argsort(kf_time, stable=True)
    order = order[torch.argsort(kf_video[order], stable=True)]
    vid = kf_video[order]
    t = kf_time[order].to(torch.float64)
    tgts, srcs = [self_idx], [self_idx]
    for d in range(1, k):
        a, b = order[:-d], order[d:]
        linked = (vid[:-d] == vid[d:]) & ((t[d:] - t[:-d]) <= radius + TIME_EPS)
        if not bool(linked.any()):
            break
        a, b = a[linked], b[linked]
        tgts += [a, b]
        srcs += [b, a]
    return torch.cat(tgts), torch.cat(srcs)


def link_batch_positions(num_kf: int, radius: int, device=None) -> tuple[Tensor, Tensor]:
    """The official collate_batch.py adjacency: batch item k linked to items k-radius..k+radius
    (radius 1 there) whatever their video and time; self pairs included. Returns (tgt, src)."""
    k = torch.arange(num_kf, device=device)
    tgts, srcs = [k], [k]
    for d in range(1, min(radius, num_kf - 1) + 1):
        tgts += [k[:-d], k[d:]]
        srcs += [k[d:], k[:-d]]
    return torch.cat(tgts), torch.cat(srcs)


@dataclass
class BlockGraph:
    """Nodes grouped by keyframe, padded to `n_max` slots; edges as dense blocks per keyframe pair."""

    num_kf: int
    n_max: int
    node_index: Tensor  # (N,) long: flat padded position kf * n_max + slot
    pair_tgt: Tensor  # (P,) long: keyframe of the receiving nodes (rows)
    pair_src: Tensor  # (P,) long: keyframe of the sending nodes (columns)
    mask: Tensor  # (P, n_max, n_max) bool: edge row i <- column j exists
    self_loop: Tensor  # (P, n_max, n_max) bool: the entry is a node's edge to itself
    # (K, S) long: the pairs of each target keyframe (S: most pairs of any target), padded with P,
    # the index of an all-zero block; lets aggregation run one matmul per target keyframe.
    pair_table: Tensor
    # (K, n_max) long: the node in each slot; empty slots name node 0, which their weight (always 0,
    # they are masked) multiplies, so values are gathered from the node rows without a padded copy.
    slot_node: Tensor

    def to_padded(self, x: Tensor) -> Tensor:
        """(N, *rest) -> (K, n_max, *rest), zeros in empty slots (differentiable)."""
        out = x.new_zeros((self.num_kf * self.n_max,) + tuple(x.shape[1:]))
        out = out.index_copy(0, self.node_index, x)
        return out.view((self.num_kf, self.n_max) + tuple(x.shape[1:]))


def build_block_graph(
    node_kf: Tensor,
    node_is_actor: Tensor,
    num_kf: int,
    pair_tgt: Tensor,
    pair_src: Tensor,
    *,
    actor_actor: bool = True,
    object_object: bool = True,
    num_targets: int | None = None,
) -> BlockGraph:
    """Block graph over nodes `node_kf` (N,) given linked keyframe pairs.

    Every node of keyframe `pair_tgt[p]` receives from every node of `pair_src[p]`, except
    actor->actor edges when `actor_actor=False` and object->object edges when
    `object_object=False`. Self-loops (a node to itself) are always kept, so every node has at
    least one incoming edge and the softmax is never over an empty set.
    `num_targets`: when every `pair_tgt` is below it (the receiving keyframes numbered first),
    aggregation (`blocked_aggregate`) computes those keyframes' rows only; default `num_kf`.
    """
    dev = node_kf.device
    n = node_kf.shape[0]
    counts = torch.bincount(node_kf, minlength=num_kf)  # (K,)
    n_max = int(counts.max()) if n > 0 else 0
    order = torch.argsort(node_kf, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(node_kf)
    slot[order] = torch.arange(n, device=dev) - starts[node_kf[order]]
    node_index = node_kf * n_max + slot

    ar = torch.arange(n_max, device=dev)
    valid = ar[None, :] < counts[:, None]  # (K, n_max)
    mask = valid[pair_tgt][:, :, None] & valid[pair_src][:, None, :]  # (P, n_max, n_max)
    eye = torch.eye(n_max, dtype=torch.bool, device=dev)
    self_loop = (pair_tgt == pair_src)[:, None, None] & eye[None] & mask
    if not (actor_actor and object_object):
        is_actor = torch.zeros(num_kf * n_max, dtype=torch.bool, device=dev)
        is_actor[node_index] = node_is_actor
        is_actor = is_actor.view(num_kf, n_max)
        is_object = valid & ~is_actor
        if not actor_actor:
            mask = mask & ~(is_actor[pair_tgt][:, :, None] & is_actor[pair_src][:, None, :])
        if not object_object:
            mask = mask & ~(is_object[pair_tgt][:, :, None] & is_object[pair_src][:, None, :])
        mask = mask | self_loop
    slot_node = torch.zeros(num_kf * n_max, dtype=torch.long, device=dev)
    slot_node[node_index] = torch.arange(n, device=dev)
    return BlockGraph(num_kf, n_max, node_index, pair_tgt, pair_src, mask, self_loop,
                      pair_table(pair_tgt, num_kf if num_targets is None else num_targets),
                      slot_node.view(num_kf, n_max))


def pair_table(pair_tgt: Tensor, num_kf: int) -> Tensor:
    """(K, S) pair ids grouped by target keyframe, padded with P (see BlockGraph.pair_table)."""
    p = pair_tgt.shape[0]
    per_tgt = torch.bincount(pair_tgt, minlength=num_kf)  # (K,)
    s_max = int(per_tgt.max()) if p else 0
    order = torch.argsort(pair_tgt, stable=True)
    first = torch.cumsum(per_tgt, 0) - per_tgt
    pos = torch.arange(p, device=pair_tgt.device) - first[pair_tgt[order]]
    table = torch.full((num_kf, s_max), p, dtype=torch.long, device=pair_tgt.device)
    table[pair_tgt[order], pos] = order
    return table


def blocked_softmax(logits: Tensor, mask: Tensor, pair_tgt: Tensor, num_kf: int) -> Tensor:
    """Row softmax over all blocks sharing a target keyframe (a segment softmax).

    logits (P, H, R, C), mask broadcastable to it; the softmax of row (pair_tgt[p], h, r) runs
    over every unmasked column of every pair p with that target keyframe. Math in >= float32;
    max-subtraction via scatter_reduce(amax) for stability, sums via index_add. Rows with no
    unmasked entry (padding) get all-zero weights.
    """
    logits = logits.to(acc_dtype(logits.dtype))
    p, h, r, _ = logits.shape
    masked = logits.masked_fill(~mask, float("-inf"))
    row_max = masked.amax(dim=-1)  # (P, H, R)
    seg_max = torch.full((num_kf, h, r), float("-inf"), device=logits.device, dtype=logits.dtype)
    seg_max = seg_max.scatter_reduce(0, pair_tgt[:, None, None].expand(p, h, r), row_max, "amax")
    # The shift cancels in the softmax; detaching it saves backward work. Empty rows: shift 0.
    seg_max = torch.where(torch.isfinite(seg_max), seg_max, torch.zeros_like(seg_max)).detach()
    e = torch.exp(masked - take(seg_max, pair_tgt)[..., None])  # exp(-inf) = 0 for masked entries
    denom = logits.new_zeros((num_kf, h, r)).index_add(0, pair_tgt, e.sum(-1))
    return e / take(denom.clamp_min(1e-30), pair_tgt)[..., None]


def blocked_aggregate(weights: Tensor, values: Tensor, graph: BlockGraph) -> Tensor:
    """sum_j W_ij v_j per target node: weights (P, H, R, C) over `graph`'s blocks, values of the
    nodes per head (H, N, F) or shared by the heads (N, F) (not copied per head) -> (H, K_t, R, F)
    for the first K_t keyframes (the rows of `graph.pair_table`: every keyframe unless the graph
    was built with `num_targets`); R <= n_max: the first R slots of each target keyframe.
    Masked entries of `weights` must be 0, as the softmax gives them: they multiply a stand-in
    node's values, so their own gradient is not 0 (the softmax's backward multiplies it by their
    weight, 0).

    The blocks of each target keyframe are laid side by side (its S source keyframes' nodes as one
    row of S * n_max columns), so the sum over sources is one matmul per target keyframe and head:
    matrices S times wider than per-pair blocks (better matmul efficiency) and no scatter-add.
    Missing pairs are all-zero blocks. The values are gathered from the node rows straight into
    the matmul's layout (H, K_t, S*C, F): no padded copy of them, and a gather's backward as the
    only scatter."""
    table = graph.pair_table
    k, s = table.shape
    p, h, r, c = weights.shape
    f = values.shape[-1]
    w = take(torch.cat((weights, weights.new_zeros((1, h, r, c)))), table)  # (K, S, H, R, C)
    src = torch.cat((graph.pair_src, graph.pair_src.new_zeros(1)))[table]  # (K, S); padding -> any kf, weight 0
    rows = graph.slot_node[src].reshape(-1)  # (K*S*C,) the node of each column
    if values.dim() == 2:
        # Shared values: the heads' rows stacked, one (H*R, S*C) x (S*C, F) matmul per target
        # (a broadcast matmul would copy the values H times, and sum them back in backward).
        v = take(values, rows.view(k, s * c))  # (K, S*C, F)
        w = w.permute(0, 2, 3, 1, 4).reshape(k, h * r, s * c)  # (K, H*R, S*C)
        return torch.matmul(w.to(v.dtype), v).view(k, h, r, f).transpose(0, 1)
    v = torch.index_select(values, 1, rows).view(h, k, s * c, f)  # (H, K, S*C, F)
    w = w.permute(2, 0, 3, 1, 4).reshape(h, k, r, s * c)  # (H, K, R, S*C)
    return torch.matmul(w.to(v.dtype), v)


def receptive_keyframes(pair_tgt: Tensor, pair_src: Tensor, query_kf: Tensor, num_layers: int) -> list[Tensor]:
    """What each of `num_layers` stacked layers over the keyframe links (pair_tgt, pair_src; self
    pairs included) must compute for the query keyframes (query_kf (K,) bool) to get their output:
    needs[l + 1] (K,) bool are the keyframes layer l computes, needs[l] those it reads (every
    source of a pair into needs[l + 1]); needs[num_layers] = query_kf."""
    needs = [query_kf]
    for _ in range(num_layers):
        prev = torch.zeros_like(query_kf)
        prev[pair_src[needs[0][pair_tgt]]] = True  # self pairs: a superset of needs[0]
        needs.insert(0, prev)
    return needs


def target_first_graph(node_kf: Tensor, node_is_actor: Tensor, is_src: Tensor, is_tgt: Tensor, pair_tgt: Tensor,
                       pair_src: Tensor, *, actor_actor: bool = True, object_object: bool = True) -> BlockGraph:
    """`build_block_graph` of one layer that computes the keyframes `is_tgt` (K,) bool from those
    `is_src` (a superset) over the pairs into `is_tgt`: nodes `node_kf` (N,) (original keyframe
    ids, all in `is_src`), keyframes renumbered targets first, so aggregation computes the
    targets' rows only (`num_targets`)."""
    n_tgt = is_tgt.sum()
    renum = torch.where(is_tgt, torch.cumsum(is_tgt, 0) - 1, n_tgt + torch.cumsum(is_src & ~is_tgt, 0) - 1)
    sel = is_tgt[pair_tgt]
    return build_block_graph(renum[node_kf], node_is_actor, int(is_src.sum()), renum[pair_tgt[sel]],
                             renum[pair_src[sel]], actor_actor=actor_actor, object_object=object_object,
                             num_targets=int(n_tgt))


def dense_attention(g: BlockGraph, wgt: Tensor) -> tuple[Tensor, Tensor]:
    """Blocked weights (P, H, n_max, n_max) of `g` -> dense (N, N) float32 mean over heads (on the
    CPU) and the connectivity (N, N) bool; row i = what node i receives from each node j."""
    n = g.node_index.shape[0]
    slot = g.slot_node.cpu()  # (K, n_max) node of each slot; empty slots are never in the mask
    pair, r, c = torch.nonzero(g.mask.cpu(), as_tuple=True)  # every edge, once (pairs are distinct)
    rows, cols = slot[g.pair_tgt.cpu()[pair], r], slot[g.pair_src.cpu()[pair], c]
    dense = torch.zeros(n, n, dtype=torch.float32)
    connected = torch.zeros(n, n, dtype=torch.bool)
    dense[rows, cols] = wgt.float().mean(1).cpu()[pair, r, c]  # (P, n_max, n_max) -> edges
    connected[rows, cols] = True
    return dense, connected
