"""The pieces of a training loop over one split: its context, a batch on the device, the loss of
a step, one epoch of optimisation, and the optimizer.

`train.train` and class-balanced retraining (`balanced.py`) run the same `train_epoch`; what
differs between them (which parameters learn, how keyframes are drawn) stays in the caller.
"""
from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from stagecache.core.errors import UserError
from stagecache.heads import Head, HeadInput
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.sources import ResidentSource, SplitSource
from stagecache.pipelines.training.split_batches import CHUNK_BYTES, GraphData


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or inf: the run diverged (a user-facing state, not a traceback)."""


@dataclass(frozen=True)
class SplitContext:
    """One loaded split as a run feeds it to a head: its `graph` (every keyframe, actor and object;
    the features too when resident), the store tables it came from (None for tensors built in
    memory), the head's temporal radius, the device the head runs on, whether CUDA autocasts, and
    the `source` every batch comes from (sources.SplitSource; default: the graph, resident)."""

    graph: GraphData
    radius: float
    device: torch.device
    amp: bool = True
    tables: object | None = None  # extract.store.Tables: videos and timestamps for the predictions CSV
    source: SplitSource | None = None

    @property
    def feed(self) -> SplitSource:
        """Where batches come from: `source`, or the resident graph."""
        return self.source if self.source is not None else ResidentSource(self.graph)

    @classmethod
    def of(cls, split, radius: float, device: torch.device, amp: bool = True) -> "SplitContext":
        """The context of a loaded `split_read.Split`."""
        return cls(split.graph, radius, device, amp, split.tables, split.source)


@dataclass(frozen=True)
class LossContext:
    """How a step's loss is computed: the loss (pipelines/training/losses.py) by name, its pose columns, CPU
    bfloat16 autocast, and whether a head's auxiliary loss is added."""

    loss: str
    pose_cols: Tensor  # (L,) bool, the softmax columns of loss=pose_softmax
    cpu_bf16: bool = False
    aux: bool = True

    @property
    def fn(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        return losses.get_loss(self.loss)


def device_batches(split: SplitContext, batches: list[Tensor], *, aux_labels: bool = False,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[HeadInput, Tensor, Tensor, Tensor | None]]:
    """For each set of query keyframes in `batches`: the head input on the split's device, the
    positions of the query actors in it, their multi-hot targets and, with `aux_labels`, the labels
    (A, L) of every actor of the batch (what a head's auxiliary loss is supervised with,
    heads.Head.forward_with_aux; else None). Indices are built on the host for all the batches at
    once and gathered a chunk of batches at a time (`SplitSource.batches`: from the resident graph,
    or from chunks read from the store while the previous one trains): no device sync."""
    for b in split.feed.batches(batches, split.radius, device=split.device, actor_labels=aux_labels,
                                chunk_bytes=chunk_bytes):
        yield b.x, b.query_pos, b.target, b.actor_labels


def device_batch(split: SplitContext, queries: Tensor, *, aux_labels: bool = False
                 ) -> tuple[HeadInput, Tensor, Tensor, Tensor | None]:
    """`device_batches` of one batch."""
    return next(device_batches(split, [queries], aux_labels=aux_labels))


@functools.lru_cache(maxsize=1)
def _cuda_half() -> torch.dtype:
    """The GPU's autocast dtype, asked once (the query costs more than a small head's step)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def step_loss(head: Head, x: HeadInput, query_pos: Tensor, target: Tensor, loss: LossContext, *, amp: bool,
              actor_labels: Tensor | None = None) -> Tensor:
    """The training loss of one batch already on the device (plus the head's auxiliary loss, given
    `actor_labels`, when `loss.aux` and the head declares one). Autocast: with `amp` on CUDA; on
    CPU only with `loss.cpu_bf16` (bfloat16 matmuls, ~7x float32 on CPUs with AMX)."""
    dev = target.device
    # bfloat16 where the device has it: float16's range would need a GradScaler for the gradients.
    half = _cuda_half() if dev.type == "cuda" else torch.bfloat16
    enabled = (amp and dev.type == "cuda") or (loss.cpu_bf16 and dev.type == "cpu")
    with torch.autocast(dev.type, dtype=half, enabled=enabled):
        use_aux = loss.aux and head.has_aux_loss
        logits, aux_loss = head.forward_with_aux(x, actor_labels) if use_aux else (head(x), None)
    value = loss.fn(logits.index_select(0, query_pos).float(), target, loss.pose_cols.to(dev))
    if aux_loss is not None:
        value = value + aux_loss
    return value


def make_optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it has one (CPU, CUDA): one kernel over all parameters
    instead of ~10 per tensor (on CPU 4.5x faster than the default for STAGE's parameters)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused, foreach=None if fused else True)


def train_epoch(head: Head, opt: torch.optim.Optimizer, split: SplitContext, loss: LossContext,
                batches: list[Tensor], *, desc: str = "train", progress: bool = False, log_every: int = 20,
                train_mode: bool = True, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """One optimisation pass over `batches` (host tensors of query keyframes); `train_mode` False
    keeps the head in eval mode (a frozen representation under a retrained classifier). The host
    waits on the device only every `log_every` steps (progress bar, non-finite check) and at the
    end. Returns the mean loss, steps, keyframes seen and the time split into data (gathering
    batches onto the device, `device_batches`: a chunk of batches at a time) and step (forward,
    backward, optimizer; on CUDA kernels run asynchronously, so part of the step's time is counted
    where the host next waits)."""
    device = split.device
    head.train(train_mode)
    aux_labels = loss.aux and head.has_aux_loss
    loss = LossContext(loss.loss, loss.pose_cols.to(device), loss.cpu_bf16, loss.aux)  # moved once, not per step
    # The running sum also flags a non-finite loss: NaN and inf stay non-finite once added.
    total = torch.zeros((), dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    data_s = step_s = 0.0
    checked = done = 0
    seen = sum(len(q) for q in batches)
    t_start = time.perf_counter()

    def check(upto: int) -> None:
        nonlocal checked
        if not bool(torch.isfinite(total)):
            raise NonFiniteLossError(f"non-finite loss at {desc}, in steps {checked}-{upto - 1}: the training "
                                     "diverged (lower --lr, or check the head); the run directory keeps the "
                                     "last finished epoch (--resume)")
        checked = upto

    # The bar redraws at most every 0.5 s (a redraw per step costs more than a small head's step).
    with tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch", mininterval=0.5) as bar:
        t0 = time.perf_counter()
        for step, (x, qpos, target, actor_labels) in enumerate(
                device_batches(split, batches, aux_labels=aux_labels, chunk_bytes=chunk_bytes)):
            t1 = time.perf_counter()
            value = step_loss(head, x, qpos, target, loss, amp=split.amp, actor_labels=actor_labels)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += value.detach()
            if (step + 1) % log_every == 0:
                bar.update(log_every)
                check(step + 1)
                done += sum(len(q) for q in batches[step + 1 - log_every: step + 1])
                bar.set_postfix(loss=f"{float(total) / (step + 1):.4f}",
                                kf_s=f"{done / (time.perf_counter() - t_start):.0f}", refresh=False)
            t2 = time.perf_counter()
            data_s += t1 - t0
            step_s += t2 - t1
            t0 = t2
        bar.update(len(batches) - bar.n)
    if device.type == "cuda":
        t0 = time.perf_counter()
        torch.cuda.synchronize(device)
        step_s += time.perf_counter() - t0
    check(len(batches))
    return {"train_loss": float(total) / max(len(batches), 1), "steps": len(batches), "seen": seen,
            "data_seconds": data_s, "step_seconds": step_s}
