"""Random detector-style JHMDB-21 / UCF101-24 cases: GT tubes (whole-video as JHMDB, partial and
overlapping in time as UCF101-24), jittered copies of GT boxes with wrong labels and duplicates,
false boxes, frames without any row, scores on a coarse grid (ties)."""
from __future__ import annotations

import numpy as np

from stagecache.extract import ava_io
from stagecache.extract.datasets.tubes_pkl import TubeGT, frame_timestamp

FPS = 30.0


def random_case(seed: int, *, ucf: bool = False, n_labels: int = 3, n_videos: int = 5):
    rng = np.random.default_rng(seed)
    H, W = 120, 160
    tubes, nframes = {}, {}
    videos = [f"c/v{i}" for i in range(n_videos)]
    for i, v in enumerate(videos):
        n = int(rng.integers(16, 36))
        nframes[v] = n
        out = []
        for k in range(int(rng.integers(1, 4))):
            label = int((i + k) % n_labels if k or i < n_labels else rng.integers(n_labels))
            a, b = (sorted(rng.integers(1, n + 1, 2)) if ucf else (1, n))
            if b - a < 3:
                a, b = 1, n
            x0, y0 = rng.uniform(0, W - 60), rng.uniform(0, H - 60)
            w, h = rng.uniform(25, 60), rng.uniform(25, 60)
            fr = np.arange(a, b + 1)
            drift = np.cumsum(rng.normal(0, 1.5, (len(fr), 2)), 0)
            box = np.column_stack([x0 + drift[:, 0], y0 + drift[:, 1], x0 + w + drift[:, 0], y0 + h + drift[:, 1]])
            out.append((label, np.column_stack([fr, np.clip(box, 0, [W - 1, H - 1, W - 1, H - 1])]).astype(np.float64)))
        out.sort(key=lambda x: x[0])
        tubes[v] = out
    gt = TubeGT("case.pkl", [f"a{c}" for c in range(n_labels)], tubes, nframes, [[]], [videos],
                {v: (H, W) for v in videos})
    grid = np.array([0.2, 0.4, 0.6, 0.8, 0.9]) if seed % 2 else None
    rows = []  # (video, frame, label, score, normalised box)
    for v in videos:
        skip = set(rng.choice(np.arange(1, nframes[v] + 1), int(rng.integers(0, 4)), replace=False).tolist())
        for f in range(1, nframes[v] + 1):
            if f in skip:
                continue
            for label, t in tubes[v]:
                hit = t[t[:, 0] == f]
                if not len(hit):
                    continue
                for _ in range(int(rng.integers(0, 3))):
                    j = rng.normal(0, 4, 4)
                    lab = label if rng.random() < 0.8 else int(rng.integers(n_labels))
                    s = rng.choice(grid) if grid is not None else rng.uniform(0.05, 1)
                    rows.append((v, f, lab, float(s), (hit[0, 1:5] + j)))
                    if rng.random() < 0.15:  # a duplicate (same box, lower score)
                        rows.append((v, f, lab, float(s) * 0.5, (hit[0, 1:5] + j)))
            for _ in range(int(rng.poisson(1.0))):  # false boxes
                x, y = rng.uniform(0, W - 30), rng.uniform(0, H - 30)
                s = rng.choice(grid) if grid is not None else rng.uniform(0.01, 0.7)
                rows.append((v, f, int(rng.integers(n_labels)), float(s), np.array([x, y, x + rng.uniform(10, 50),
                                                                                      y + rng.uniform(10, 50)])))
    order = rng.permutation(len(rows))  # file order is not frame order
    rows = [rows[i] for i in order]
    scale = np.array([W, H, W, H], np.float64)
    pred = ava_io.Predictions(
        video=np.array([r[0] for r in rows], dtype=object), timestamp=frame_timestamp([r[1] for r in rows], FPS),
        box=np.clip(np.array([r[4] / scale for r in rows], np.float32).reshape(-1, 4), 0, 1),
        action=np.array([r[2] + 1 for r in rows], np.int64), score=np.array([r[3] for r in rows], np.float32))
    return gt, videos, pred
