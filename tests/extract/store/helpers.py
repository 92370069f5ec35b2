"""Store test helpers kept free of torch/pytest so writer subprocesses start fast."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
import zlib

import numpy as np

from stagecache.extract.store import KILL_ENV, StoreWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LABEL_IDS = [1, 3, 5, 7]
LABEL_NAMES = ["stand", "sit", "walk", "talk"]
VIDEOS = [f"vid{i:02d}" for i in range(9)]


def make_video(name: str, C: int = 16):
    """Deterministic synthetic content of one video (same bytes in every process)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    K = int(rng.integers(1, 4))
    ts = np.sort(rng.choice(np.arange(900, 910), K, replace=False)).astype(np.float64)
    ac = rng.integers(0, 4, K)
    oc = rng.integers(0, 3, K)
    A, O = int(ac.sum()), int(oc.sum())
    xy = rng.random((A, 2)) * 0.5
    oxy = rng.random((O, 2)) * 0.5
    base = dict(
        actor_box=np.concatenate([xy, xy + 0.4], 1), actor_score=rng.random(A),
        actor_is_gt=rng.random(A) < 0.5, actor_labels=rng.integers(0, 2, (A, len(LABEL_IDS))),
        actor_track=rng.integers(-1, 5, A), object_box=np.concatenate([oxy, oxy + 0.3], 1),
        object_class=rng.integers(0, 10, O), object_score=rng.random(O), object_feature=rng.standard_normal((O, 6)))
    feat = dict(actor_pooled=rng.standard_normal((A, C)), actor_roi=rng.standard_normal((A, 3, 2, 2)),
                actor_temporal=rng.standard_normal((A, 4, 3)), kf_context=rng.standard_normal((K, 3, 2, 2)))
    return ts, ac, oc, base, feat


def write_videos(path, videos, *, rank=0, flush_bytes=1, groups=("base", "sf"), stall_after=None, hook=None,
                 units=False):
    """What an extraction rank does: skip committed videos, write the rest (units=True: all groups
    of a video through one add_groups call, committed together; else one add_video per group)."""
    w = StoreWriter(path, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                    object_classes=[f"c{i}" for i in range(10)], rank=rank, flush_bytes=flush_bytes)
    if stall_after is not None:
        seen = []

        def hook(fid, name):  # stop half-way through fragment number stall_after + 1
            if fid not in seen:
                seen.append(fid)
            if len(seen) == stall_after + 1:
                print("MID", flush=True)
                time.sleep(60)
    w._hook = hook
    for g in groups:
        w.declare_group(g, {"backbone": g, "command_line": f"rank {rank}"})
    todo = {g: set(videos) - w.done(g) for g in groups}
    for v in videos:
        ts, ac, oc, base, feat = make_video(v)
        arrays = {g: base if g == "base" else feat for g in groups if v in todo[g]}
        if units and arrays:
            w.add_groups(v, timestamps=ts, actor_counts=ac, object_counts=oc, groups=arrays)
            continue
        for g, a in arrays.items():
            w.add_video(g, v, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=a)
    w.close()


def fork_call(fn, *, kill_after: int | None = None) -> int:
    """fn() in a forked child process (this process's imports: no start-up cost); returns its pid.
    kill_after arms the store's kill hook (SIGKILL after that many commits) in the child only."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if kill_after is not None:
                os.environ[KILL_ENV] = str(kill_after)
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid: int, timeout: float = 120.0) -> int:
    """The signal that ended the child, or minus its exit status (0: exited normally)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"child {pid} still running after {timeout} s")
        time.sleep(0.01)


def run_writer(path, videos, **kw):
    code = (f"import sys; sys.path.insert(0, {REPO!r}); from tests.extract.store.helpers import write_videos; "
            f"write_videos({str(path)!r}, {list(videos)!r}, **{kw!r})")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})


def assert_tables_equal(a, b) -> None:
    """Two loaded `Tables` hold the same structure and the same arrays, dtypes included."""
    import torch  # here, not at the top: writer subprocesses import this module and must start fast

    assert a.video_names == b.video_names
    for f in ("kf_video", "kf_time", "kf_actor_offset", "kf_object_offset", "actor_kf", "object_kf"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert sorted(a.data) == sorted(b.data)
    for k in a.data:
        assert a.data[k].dtype == b.data[k].dtype and torch.equal(a.data[k], b.data[k]), k
