"""What the store's file checksums (issue 31) cost: their share of writing, importing and extracting.

In one run, best of --repeats, the time spent in `fragment_files` (the sizes and checksums of a
just-written fragment, computed from the arrays in memory: extract/store/integrity.py) is measured
inside each step:
  (a) the store side of extraction: `StoreWriter` writing about --gb GB of AVA-like videos (base
      tables + 2304-d float16 pooled features, 64 MiB flushes) from arrays prepared beforehand;
      real extraction also decodes and runs the backbone, so this share bounds its share from above;
  (b) `cache import --layout stage-slowfast` of a generated release file of about --gb / 2 GB;
  and the hash alone on 64 MiB: zlib.crc32 (reads the numpy buffer in place) against google-crc32c
  (its C extension takes only `bytes`: copy + hash).
Measuring the share inside the step, rather than timing runs with and without, keeps the result
apart from the noise of a shared machine. Prints the shares (goal <= 5%) and, with --results FILE,
writes them as a BENCHMARKS.md section.

    python bench/bench_checksums.py --gb 0.3 --results /tmp/checksums.md
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stagecache.extract.store.writer as writer_module  # noqa: E402  (where the writers call fragment_files)
from stagecache.extract.store import StoreWriter  # noqa: E402

DIM, ACTORS, KF = 2304, 4, 900


def video_arrays() -> dict:
    """One video's rows (generated once, outside the timing: only the store's work is timed)."""
    rng = np.random.default_rng(0)
    A = KF * ACTORS
    xy = rng.random((A, 2), dtype=np.float32) * 0.5
    return {"base": dict(actor_box=np.concatenate([xy, xy + 0.4], 1), actor_score=np.ones(A, np.float32),
                         actor_is_gt=np.ones(A, bool), actor_labels=(rng.random((A, 80)) < 0.05).astype(np.uint8),
                         actor_track=np.full(A, -1), object_box=np.zeros((0, 4), np.float32),
                         object_class=np.zeros(0, np.int64), object_score=np.zeros(0, np.float32)),
            "bb": {"actor_pooled": rng.standard_normal((A, DIM), dtype=np.float32).astype(np.float16)}}


def write(path: str, n_videos: int, arrays: dict) -> None:
    labels = list(range(1, 81))
    with StoreWriter(path, split="bench", label_ids=labels, label_names=[f"c{i}" for i in labels]) as w:
        w.declare_group("base", {})
        w.declare_group("bb", {})
        ts, ac, oc = 902.0 + np.arange(KF), np.full(KF, ACTORS), np.zeros(KF, np.int64)
        for v in range(n_videos):
            w.add_groups(f"v{v:05d}", timestamps=ts, actor_counts=ac, object_counts=oc, groups=arrays)


def release(path: str, n_keyframes: int) -> None:
    import h5py

    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        for k in range(n_keyframes):
            g = f.create_group(f"vid{k // 300:04d}_{900 + k % 300:04d}")
            xy = rng.random((ACTORS, 2), dtype=np.float32) * 0.5
            g["boxes"] = np.concatenate([xy, xy + 0.4], 1)
            g["features"] = rng.standard_normal((ACTORS, DIM), dtype=np.float32)
            g["labels"] = (rng.random((ACTORS, 81)) < 0.05).astype(np.float32)


class Timed:
    """`fragment_files` (sizes and checksums of a written fragment) with the time spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.bytes = fn, 0.0, 0

    def __call__(self, loc, fid, arrays):
        t0 = time.perf_counter()
        out = self.fn(loc, fid, arrays)
        self.seconds += time.perf_counter() - t0
        self.bytes += sum(a.nbytes for a in arrays.values())
        return out


def share(step, repeats: int) -> tuple[float, float, int]:
    """(best total seconds, seconds spent in the checksums in that run, bytes hashed) of `step`."""
    real, best = writer_module.fragment_files, None
    try:
        for _ in range(repeats):
            writer_module.fragment_files = t = Timed(real)
            t0 = time.perf_counter()
            step()
            total = time.perf_counter() - t0
            if best is None or total < best[0]:
                best = (total, t.seconds, t.bytes)
    finally:
        writer_module.fragment_files = real
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    from stagecache.extract.formats.stage_release import import_stage_slowfast

    root = tempfile.mkdtemp(dir=a.dir, prefix="bench_checksums_")
    per_video = KF * ACTORS * (DIM * 2 + 16 + 4 + 1 + 80 + 8)
    n_videos = max(1, int(round(a.gb * 1e9 / per_video)))
    n_kf = max(300, int(a.gb / 2 * 1e9 / (ACTORS * (DIM * 4 + 16 + 81 * 4))))
    h5 = os.path.join(root, "val.h5")
    release(h5, n_kf)
    arrays = video_arrays()

    def fresh(name):
        p = os.path.join(root, name)
        shutil.rmtree(p, ignore_errors=True)
        return p

    rows = [(f"`StoreWriter`, {n_videos} videos ({n_videos * per_video / 1e9:.2f} GB; the store side of extraction "
             f"alone, arrays prepared beforehand)", share(lambda: write(fresh("w"), n_videos, arrays), a.repeats)),
            (f"`cache import --layout stage-slowfast`, {n_kf} keyframes",
             share(lambda: import_stage_slowfast(h5, fresh("i"), progress=False), a.repeats))]
    x = np.random.default_rng(2).standard_normal(32 << 20, dtype=np.float32).astype(np.float16)  # 64 MiB
    t_zlib = min(timed(lambda: zlib.crc32(x.data)) for _ in range(5))
    try:
        import google_crc32c

        t_c = min(timed(lambda: google_crc32c.value(x.tobytes())) for _ in range(5))
    except ImportError:
        t_c = float("nan")
    shutil.rmtree(root, ignore_errors=True)
    lines = [
        "## Store checksums: their share of writing, importing and extracting (`bench/bench_checksums.py`, issue 31)",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end), one run, best of {a.repeats}. The time spent computing the files' "
        f"sizes and checksums (`fragment_files`) is measured inside the step itself, so the share does not depend "
        f"on comparing two noisy runs. Goal: at most 5% of extraction and import time.",
        "",
        "| step | step time | in checksums | share | with / without |",
        "|---|---|---|---|---|",
    ]
    for name, (total, t, nbytes) in rows:
        lines.append(f"| {name} | {total:.2f} s | {t:.3f} s ({nbytes / 1e9:.2f} GB hashed) | {100 * t / total:.1f}% | "
                     f"{total / (total - t):.3f} |")
    lines += ["", f"The hash of 64 MiB: zlib.crc32 {t_zlib * 1e3:.1f} ms (reads the numpy buffer in place); "
                  f"google-crc32c {t_c * 1e3:.1f} ms (its C extension accepts only `bytes`, so the copy is part of it)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.results:
        with open(a.results, "w") as f:
            f.write(text)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
