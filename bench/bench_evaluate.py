"""Benchmark: `evaluate_files` (CSV reading included) vs a reference with the official code's structure.

    PYTHONPATH=. python bench/bench_evaluate.py [--keyframes 50000] [--boxes 5] [--repeat 3] [--seed 0]
                                                [--official DIR]

Writes a seeded random AVA-like GT CSV and predictions CSV (every detected box scored for all 60
classes of the AVA label map, as a model's output is; scores with 6 decimals, so there are ties), then
times in this process:

- ours: `pipelines.evaluation.ava.evaluate_files` (pyarrow CSV reader, numba-compiled official heap and matcher),
  `--repeat` times, median reported;
- reference, once: `csv.reader` row by row with `float()` / `int()` as the official `read_csv`, then
  `tests/pipelines/evaluation/ava_reference.py` (per-keyframe heap of 50, per-detection argmax loop, per-class
  `np.argsort(scores)[::-1]`, VOC AP);
- official code, once, with `--official DIR`: ActivityNet's `Evaluation/` directory (holding
  `get_ava_performance.py` and `ava/`) from a local checkout, made importable under numpy 2 by the
  user (it spells `np.float`); its printed metrics are parsed back. Not part of the project.

All must give the same per-class APs to the last bit (asserted). Ratios = baseline / median(ours).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import os
import re
import sys
import statistics
import tempfile
import time

import numpy as np

from stagecache.extract import ava_io
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP, evaluate_files

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the test-side reference
from tests.pipelines.evaluation import ava_reference  # noqa: E402


def write_input(d: str, n_kf: int, n_box: int, class_ids: list[int], seed: int) -> tuple[str, str]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    C = len(class_ids)
    ids = np.asarray(class_ids)
    n_vid = max(1, n_kf // 900)  # ~900 keyframes per 15-min video, as AVA
    kf_vid = np.arange(n_kf) % n_vid
    kf_ts = 902 + np.arange(n_kf) // n_vid
    xy = rng.uniform(0, 0.7, (n_kf, n_box, 2))
    wh = rng.uniform(0.1, 0.3, (n_kf, n_box, 2))
    gbox = np.round(np.concatenate([xy, xy + wh], -1).reshape(-1, 4), 3)
    n_lab = rng.integers(1, 4, gbox.shape[0])
    g_row = np.repeat(np.arange(gbox.shape[0]), n_lab)
    g_cls = ids[rng.integers(0, C, g_row.size)]
    dbox = gbox + rng.normal(0, 0.04, gbox.shape) * rng.choice([1, 5], gbox.shape[0], p=[0.8, 0.2])[:, None]
    dbox = np.round(np.clip(dbox, 0, 1), 3)
    score = rng.random((gbox.shape[0], C))
    boost = np.zeros((gbox.shape[0], C))
    boost[g_row, np.searchsorted(ids, g_cls)] = rng.uniform(0, 0.8, g_row.size)
    score = np.round(score + boost, 6)
    vids = np.array([f"vid{v:05d}xyz" for v in range(n_vid)])

    def write(path, kf, box, cls, last):
        t = pa.table({"v": vids[kf_vid[kf]], "t": kf_ts[kf], "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2],
                      "y2": box[:, 3], "c": cls, "s": last})
        pcsv.write_csv(t, path, write_options=pcsv.WriteOptions(include_header=False, quoting_style="none"))

    gt_path, pred_path = os.path.join(d, "gt.csv"), os.path.join(d, "pred.csv")
    write(gt_path, g_row // n_box, gbox[g_row], g_cls, np.repeat(np.arange(gbox.shape[0]) % n_box, n_lab))
    det_row = np.repeat(np.arange(gbox.shape[0]), C)
    write(pred_path, det_row // n_box, dbox[det_row], np.tile(ids, gbox.shape[0]), score.ravel())
    return gt_path, pred_path


def _csv_rows(path, gt: bool):
    """Rows as the official `read_csv` parses them: key "%s,%04d", float() coordinates, int() class."""
    with open(path) as f:
        for row in csv.reader(f):
            x1, y1, x2, y2 = [float(n) for n in row[2:6]]
            last = float(row[7]) if len(row) == 8 else None
            yield ("%s,%04d" % (row[0], int(row[1])), x1, y1, x2, y2, int(row[6]), last)


def run_official(official_dir: str, label_map, gt_path: str, pred_path: str, names: dict[int, str]):
    """({class id: AP}, mAP, seconds) of ActivityNet's `run_evaluation` on the same files."""
    sys.path[:0] = [official_dir, os.path.join(official_dir, "ava")]
    import get_ava_performance as official  # noqa: PLC0415  (a local checkout, not a dependency)

    logging.disable(logging.CRITICAL)
    out = io.StringIO()
    t0 = time.perf_counter()
    with open(label_map) as lm, open(gt_path) as g, open(pred_path) as p, contextlib.redirect_stdout(out):
        official.run_evaluation(lm, g, p, None)
    t = time.perf_counter() - t0
    # its `pprint.pprint(metrics)`: "'name': np.float64(value)," lines; repr round-trips float64 exactly
    metrics = {k: float(v) for k, v in re.findall(r"'([^']+)': (?:np\.float64\()?([^,)}\s]+)", out.getvalue())}
    aps = {c: metrics.get(f"PascalBoxes_PerformanceByCategory/AP@0.5IOU/{n}", float("nan")) for c, n in names.items()}
    return aps, metrics["PascalBoxes_Precision/mAP@0.5IOU"], t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keyframes", type=int, default=5000, help="keyframes (AVA val is ~50k)")
    ap.add_argument("--boxes", type=int, default=5, help="people per keyframe")
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-reference", action="store_true", help="time only ours")
    ap.add_argument("--official", metavar="DIR", help="ActivityNet Evaluation/ directory to time as well")
    a = ap.parse_args()
    lm = ava_io.read_label_map(DEFAULT_LABEL_MAP)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        gt_path, pred_path = write_input(d, a.keyframes, a.boxes, lm.ids, a.seed)
        n_rows = sum(1 for _ in open(pred_path, "rb"))
        print(f"input: {a.keyframes} keyframes, {n_rows} prediction rows ({os.path.getsize(pred_path) / 1e6:.0f} MB), "
              f"written in {time.perf_counter() - t0:.1f} s")
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            res = evaluate_files(gt_path, pred_path, DEFAULT_LABEL_MAP)
            times.append(time.perf_counter() - t0)
        t_ours = statistics.median(times)
        print(f"ours: mAP {res.map:.6f}; runs {', '.join(f'{t:.2f}' for t in times)} s; median {t_ours:.2f} s")
        if a.skip_reference:
            return
        t0 = time.perf_counter()
        aps, m = ava_reference.official_or_pyslowfast(list(_csv_rows(gt_path, True)), _csv_rows(pred_path, False),
                                                      lm.ids, cap=50)
        t_ref = time.perf_counter() - t0
        print(f"reference (official structure): mAP {m:.6f} in {t_ref:.1f} s")
        diff = max(abs(aps[c] - res.per_class[c]) for c in lm.ids if not np.isnan(aps[c]))
        assert diff == 0.0 and m == res.map, (diff, m, res.map)
        print(f"per-class APs identical (max |diff| {diff}); ratio reference / ours = {t_ref / t_ours:.1f}x")
        if a.official:
            o_aps, o_map, t_off = run_official(a.official, DEFAULT_LABEL_MAP, gt_path, pred_path,
                                               dict(zip(lm.ids, lm.names)))
            diff = max(abs(o_aps[c] - res.per_class[c]) for c in lm.ids if not np.isnan(res.per_class[c]))
            assert diff == 0.0 and o_map == res.map, (diff, o_map, res.map)
            print(f"official code: mAP {o_map:.6f} in {t_off:.1f} s; per-class APs identical; "
                  f"ratio official / ours = {t_off / t_ours:.1f}x")


if __name__ == "__main__":
    main()
