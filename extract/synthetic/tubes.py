"""Synthetic JHMDB-21 / UCF101-24: the ACT ground-truth pickle and frame folders, tiny and seeded.

Layout written under `root` (exactly the real datasets' one, extract.datasets.tubes_pkl):
  jhmdb:  JHMDB-GT.pkl     + Frames/<video>/%05d.png        (3 splits)
  ucf24:  UCF101v2-GT.pkl  + rgb-images/<video>/%05d.jpg    (1 split)
  <video> = <class>/<clip>; plus `synthetic_tubes.json` (the colours per video and person).
The pickle is written the way Python 2 wrote it (protocol 2, strings and array bytes as Python 2
`str` opcodes, `numpy.core.multiarray` globals), so it must be read with encoding="latin1".

The world: every video has two people, each a solid box of colour red or green that drifts a
little per frame on a noisy grey background. Label of a person = 2 * own colour + the other
person's colour ("red_with_red", "red_with_green", "green_with_red", "green_with_green"): a
relational rule. A classifier on one person's own feature is right half of the time within its
colour; a head that looks at the other actor of the keyframe (STAGE) can be right every time.
jhmdb: both tubes span the whole video. ucf24: the second tube starts after the first frame and
ends before the last (tubes that start and end inside a video and overlap in time).

`make_tube_feature_store` writes a store from the same pickle without rendering: actor feature =
COLOUR_CODE[own colour] + noise, so the rule's relational half can only come from the other actor.
"""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np

from stagecache.extract.datasets.tube_split import tube_inputs
from stagecache.extract.datasets.tubes_pkl import dataset_spec

PICKLE_NAMES = {"jhmdb": "JHMDB-GT.pkl", "ucf24": "UCF101v2-GT.pkl"}
COLOURS = ("red", "green")
RGB = np.array([[200, 40, 40], [40, 200, 40]], np.uint8)
LABELS = [f"{a}_with_{b}" for a in COLOURS for b in COLOURS]
CODE_SEED = 20261201  # fixed: colour codes identical across splits and seeds


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with Python 2 `str` opcodes for text and bytes (what cPickle wrote)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def write_py2_pickle(path: str | Path, obj) -> None:
    """`obj` as a Python 2 protocol 2 pickle (numpy globals under their numpy 1 module path)."""
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    Path(path).write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def _splits(videos: list[str], n_splits: int) -> tuple[list[list[str]], list[list[str]]]:
    """Split s tests on the videos with index % max(n_splits, 3) == s (a rotation, like JHMDB's 3)."""
    k = max(n_splits, 3)
    test = [[v for i, v in enumerate(videos) if i % k == s] for s in range(n_splits)]
    train = [[v for v in videos if v not in set(t)] for t in test]
    return train, test


def make_tube_dataset(root: str | Path, *, dataset: str = "jhmdb", seed: int = 0, videos_per_class: int = 3,
                      n_frames: int = 12, height: int = 32, width: int = 40, render: bool = True) -> Path:
    """Write the synthetic dataset under `root` (see the module doc); returns the pickle's path.

    `render=False` writes the pickle and json only (feature-level use)."""
    spec = dataset_spec(dataset)
    if videos_per_class < 1 or n_frames < 4 or min(height, width) < 16:
        raise ValueError("need videos_per_class >= 1, n_frames >= 4, frames of at least 16 x 16")
    root = Path(root)
    rng = np.random.default_rng([seed, 7])
    gttubes, nframes, resolution, colours, videos = {}, {}, {}, {}, []
    bw, bh = width // 4, height // 2
    for c in range(len(LABELS)):
        for j in range(videos_per_class):
            own, other = divmod(c, 2)
            v = f"{LABELS[c]}/v_{LABELS[c]}_g{seed:02d}_c{j:02d}"
            videos.append(v)
            nframes[v], resolution[v], colours[v] = n_frames, (height, width), [own, other]
            span = [(1, n_frames), (1, n_frames) if dataset == "jhmdb" else (2, n_frames - 1)]
            x0 = [int(rng.integers(0, width // 2 - bw)), int(rng.integers(width // 2, width - bw))]
            y0 = [int(rng.integers(0, height - bh)) for _ in range(2)]
            tubes: dict[int, list[np.ndarray]] = {}
            for p, (col, (f0, f1)) in enumerate(zip((own, other), span)):
                f = np.arange(f0, f1 + 1)
                dx = np.clip(x0[p] + (f - 1) // 3 * (1 if p == 0 else -1), 0, width - bw)
                box = np.stack([f, dx, np.full(len(f), y0[p]), dx + bw - 1, np.full(len(f), y0[p] + bh - 1)], 1)
                tubes.setdefault(2 * col + (other if p == 0 else own), []).append(box.astype(np.float32))
            gttubes[v] = tubes
    train, test = _splits(videos, spec.splits)
    root.mkdir(parents=True, exist_ok=True)
    pkl = root / PICKLE_NAMES[dataset]
    write_py2_pickle(pkl, {"labels": LABELS, "gttubes": gttubes, "nframes": nframes, "train_videos": train,
                           "test_videos": test, "resolution": resolution})
    (root / "synthetic_tubes.json").write_text(json.dumps({"dataset": dataset, "seed": seed, "colours": colours}))
    if render:
        _render(root, spec, gttubes, n_frames, height, width, seed)
    return pkl


def _render(root: Path, spec, gttubes, n_frames, height, width, seed) -> None:
    from PIL import Image

    for v, tubes in gttubes.items():
        rng = np.random.default_rng([seed, 11, sum(map(ord, v))])
        d = root / spec.frame_dir / v
        d.mkdir(parents=True, exist_ok=True)
        for f in range(1, n_frames + 1):
            img = (110 + rng.integers(-20, 21, (height, width, 3))).astype(np.uint8)
            for lab, ts in tubes.items():
                for t in ts:
                    row = t[t[:, 0] == f]
                    if len(row):
                        x1, y1, x2, y2 = row[0, 1:5].astype(int)
                        img[y1:y2 + 1, x1:x2 + 1] = RGB[lab // 2]
            Image.fromarray(img).save(d / spec.frame_name.format(f))


def colour_codes(dim: int) -> np.ndarray:
    """(2, dim) unit colour codes, fixed for all seeds."""
    x = np.random.default_rng([CODE_SEED, dim]).standard_normal((len(COLOURS), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_tube_feature_store(pkl: str | Path, out: str | Path, *, dataset: str, split: str, seed: int = 0,
                            dim: int = 16, noise: float = 0.3, group: str = "synthetic") -> Path:
    """A store of split `split` (train<N> / test<N>) from a synthetic pickle, without rendering.

    Rows are the ones `extract features` writes for that split (extract.actors.RowBuilder on the
    same GT rows); `actor_pooled` = COLOUR_CODE[own colour] + noise * N(0, 1/dim)."""
    from stagecache.extract.actors import RowBuilder
    from stagecache.extract.store import StoreWriter

    pkl = Path(pkl)
    t = tube_inputs(dataset, str(pkl), split, str(pkl.parent))
    rows = RowBuilder(label_ids=t.label_map.ids, annotations=t.annotations)
    codes = colour_codes(dim)
    rng = np.random.default_rng([seed, 13, int(split[-1])])
    with StoreWriter(str(out), split=split, label_ids=t.label_map.ids, label_names=t.label_map.names) as w:
        w.declare_group("base", {"kind": "boxes", "source": "synthetic_tubes", "dataset": dataset})
        w.declare_group(group, {"backbone": group, "source": "synthetic_tubes", "pooled_dim": dim, "noise": noise})
        for v in sorted(rows.videos()):
            r = rows.build(v)
            own = r.arrays["actor_labels"].argmax(1) // 2  # label index // 2 = the person's own colour
            feat = codes[own] + noise / np.sqrt(dim) * rng.standard_normal((len(own), dim)).astype(np.float32)
            counts = dict(timestamps=r.timestamps, actor_counts=r.actor_counts, object_counts=r.object_counts)
            w.add_video("base", v, arrays=r.arrays, **counts)
            w.add_video(group, v, arrays={"actor_pooled": feat}, **counts)
    return Path(out)


__all__ = ["make_tube_dataset", "make_tube_feature_store", "write_py2_pickle", "LABELS", "PICKLE_NAMES"]
