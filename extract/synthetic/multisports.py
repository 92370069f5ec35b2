"""Synthetic MultiSports in its real layout (extract/datasets/multisports.py), tiny and seeded:

  <root>/multisports_GT.pkl                      the GT pickle (Python 3 pickle of the ACT-style dict)
  <root>/rawframes/<sport>/<clip>/%05d.jpg        frames from 1, 25 fps
  <root>/MultiSports_box/{train,test}.pkl        person boxes {"<clip>,<frame>": (n, 5) normalised + score}
<video> = `<sport>/v_<id>_c<NNN>`. Labels: four per sport (one of them a label MultiSports'
evaluator skips, "basketball save"). Every video holds several people, each a solid box of its
label's colour drifting over a noisy background; a person performs one or two actions in a row,
tubes start and end inside the video and overlap in time with the other people's.

`multisports_gt` gives the dict alone (random cases for the evaluator's tests), `noisy_predictions`
predictions CSV rows from it: jittered GT boxes with a true and a wrong class, missed boxes, false
positives, and scores on a coarse grid (ties).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from stagecache.extract import ava_io

SPORTS = {"aerobic_gymnastics": ["aerobic split jump", "aerobic turn", "aerobic scissors leap", "aerobic kick jump"],
          "basketball": ["basketball pass", "basketball dribble", "basketball shot", "basketball save"]}
LABELS = [name for names in SPORTS.values() for name in names]
GT_NAME, FRAME_DIR, BOX_DIR = "multisports_GT.pkl", "rawframes", "MultiSports_box"
_RGB = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.uint8)


def multisports_gt(seed: int = 0, *, videos_per_sport: int = 3, n_frames: tuple[int, int] = (30, 40),
                   people: tuple[int, int] = (2, 4), height: int = 48, width: int = 64, tube_dtype=np.float32) -> dict:
    """The GT dict in MultiSports' layout (train/test: one split, every third video tested)."""
    rng = np.random.default_rng([seed, 36])
    gttubes, nframes, resolution, videos = {}, {}, {}, []
    for s, (sport, names) in enumerate(SPORTS.items()):
        for j in range(videos_per_sport):
            v = f"{sport}/v_{seed:02d}{s}{j:03d}_c{j + 1:03d}"
            n = int(rng.integers(n_frames[0], n_frames[1] + 1))
            videos.append(v)
            nframes[v], resolution[v] = n, (height, width)
            tubes: dict[int, list[np.ndarray]] = {}
            for _ in range(int(rng.integers(people[0], people[1] + 1))):
                bw, bh = int(rng.integers(8, width // 3)), int(rng.integers(12, height // 2))
                x, y = float(rng.uniform(0, width - bw)), float(rng.uniform(0, height - bh))
                start = int(rng.integers(1, n // 2))
                for _ in range(int(rng.integers(1, 3))):  # one or two actions in a row
                    end = min(n, start + int(rng.integers(6, n)))
                    f = np.arange(start, end + 1)
                    dx = np.clip(x + np.cumsum(rng.normal(0, 0.7, len(f))), 0, width - bw - 1)
                    dy = np.clip(y + np.cumsum(rng.normal(0, 0.4, len(f))), 0, height - bh - 1)
                    box = np.stack([f, dx, dy, dx + bw, dy + bh], 1).round(1).astype(tube_dtype)
                    label = s * 4 + int(rng.integers(0, 4))
                    tubes.setdefault(label, []).append(box)
                    if end >= n - 1:
                        break
                    start = end + 1
            gttubes[v] = tubes
    test = [v for i, v in enumerate(videos) if i % 3 == 0]
    return {"labels": list(LABELS), "gttubes": gttubes, "nframes": nframes,
            "train_videos": [[v for v in videos if v not in test]], "test_videos": [test], "resolution": resolution}


def noisy_predictions(gt: dict, seed: int = 0, *, fps: float = 25.0, miss: float = 0.2, jitter: float = 2.0,
                      false_positives: int = 3, score_grid: float = 0.1) -> ava_io.Predictions:
    """Predictions of the test videos drawn from the GT (see the module doc); boxes normalised,
    timestamp = (frame - 1) / fps."""
    rng = np.random.default_rng([seed, 37])
    rows: list[tuple] = []
    n_labels = len(gt["labels"])
    for v in gt["test_videos"][0]:
        h, w = gt["resolution"][v]
        scale = np.array([w, h, w, h], np.float64)
        for label, tubes in gt["gttubes"][v].items():
            for t in tubes:
                for r in t:
                    if rng.random() < miss:
                        continue
                    box = np.clip((r[1:5] + rng.normal(0, jitter, 4)) / scale, 0, 1)
                    box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
                    for c, hi in ((label, 1.0), (int(rng.integers(0, n_labels)), 0.6)):
                        score = np.round(rng.uniform(0.05, hi) / score_grid) * score_grid
                        rows.append((v, (r[0] - 1) / fps, *box, c + 1, score))
        for _ in range(false_positives):
            f = int(rng.integers(1, gt["nframes"][v] + 1))
            x, y = rng.uniform(0, 0.7, 2)
            rows.append((v, (f - 1) / fps, x, y, x + 0.3, y + 0.3, int(rng.integers(1, n_labels + 1)),
                         np.round(rng.uniform(0, 1) / score_grid) * score_grid))
    if not rows:
        return ava_io.Predictions(video=np.zeros(0, str), timestamp=np.zeros(0), box=np.zeros((0, 4)),
                                  action=np.zeros(0, np.int64), score=np.zeros(0))
    cols = list(zip(*rows))
    return ava_io.Predictions(video=np.array(cols[0], str), timestamp=np.array(cols[1], np.float64),
                              box=np.stack([np.array(cols[i], np.float64) for i in range(2, 6)], 1),
                              action=np.array(cols[6], np.int64), score=np.array(cols[7], np.float64))


def make_multisports_dataset(root: str | Path, *, seed: int = 0, videos_per_sport: int = 3, render: bool = True,
                             **kwargs) -> Path:
    """Write the synthetic dataset under `root` (see the module doc); returns the GT pickle's path."""
    root = Path(root)
    gt = multisports_gt(seed, videos_per_sport=videos_per_sport, **kwargs)
    root.mkdir(parents=True, exist_ok=True)
    (root / GT_NAME).write_bytes(pickle.dumps(gt, protocol=4))
    rng = np.random.default_rng([seed, 38])
    (root / BOX_DIR).mkdir(exist_ok=True)
    for side, key in (("train", "train_videos"), ("test", "test_videos")):
        boxes = {}
        for v in gt[key][0]:
            h, w = gt["resolution"][v]
            scale = np.array([w, h, w, h], np.float64)
            for f in range(1, gt["nframes"][v] + 1):
                rows = [np.r_[np.clip((r[1:5] + rng.normal(0, 1.0, 4)) / scale, 0, 1), rng.uniform(0.5, 1)]
                        for ts in gt["gttubes"][v].values() for t in ts for r in t[t[:, 0] == f]]
                if rows:  # the released key: the clip without its sport folder, frame from 1
                    boxes[f"{v.rsplit('/', 1)[1]},{f}"] = np.array(rows, np.float32)
        (root / BOX_DIR / f"{side}.pkl").write_bytes(pickle.dumps(boxes, protocol=4))
    if render:
        _render(root, gt, seed)
    return root / GT_NAME


def _render(root: Path, gt: dict, seed: int) -> None:
    from PIL import Image

    for v, tubes in gt["gttubes"].items():
        h, w = gt["resolution"][v]
        rng = np.random.default_rng([seed, 39, sum(map(ord, v))])
        d = root / FRAME_DIR / v
        d.mkdir(parents=True, exist_ok=True)
        for f in range(1, gt["nframes"][v] + 1):
            img = (110 + rng.integers(-20, 21, (h, w, 3))).astype(np.uint8)
            for label, ts in tubes.items():
                for t in ts:
                    for r in t[t[:, 0] == f]:
                        x1, y1, x2, y2 = (int(round(float(c))) for c in r[1:5])
                        img[y1:y2, x1:x2] = _RGB[label % 4]
            Image.fromarray(img).save(d / f"{f:05d}.jpg", quality=95)


__all__ = ["make_multisports_dataset", "multisports_gt", "noisy_predictions", "LABELS", "SPORTS", "GT_NAME"]
