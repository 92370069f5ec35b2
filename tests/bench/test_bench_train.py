"""bench/bench_train.py runs end to end at its smallest size (both parts) and reports what it
promises: keyframes/s of ours and of the official structure, the FLOP count and the fraction of
the ceiling, and every head's loop against its bare step. Not timed: speed goals live in the
benchmark's own output (BENCHMARKS.md); this keeps the script from rotting between runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_train.py"


def test_bench_train_smallest_run(tmp_path):
    out, scratch = tmp_path / "bench.json", tmp_path / "tmp"
    scratch.mkdir()
    subprocess.run([sys.executable, str(BENCH), "--part", "all", "--sizes", "synth", "--videos", "1",
                    "--keyframes", "12", "--batch-size", "6", "--steps", "1", "--rounds", "1",
                    "--val-keyframes", "0", "--head-videos", "2", "--heads", "linear,stage",
                    "--json", str(out)], check=True, capture_output=True, text=True, timeout=300,
                   env={**os.environ, "TMPDIR": str(scratch)})
    assert not list(scratch.glob("bench_train_*"))  # its synthetic store is deleted (torch may cache there)
    res = json.loads(out.read_text())
    synth = res["stage"]["synth"]
    assert synth["ours_kf_s"] > 0 and synth["official_kf_s"] > 0
    assert synth["ratio"] == synth["ours_kf_s"] / synth["official_kf_s"]
    # Every keyframe computed once is the least work: ours' batches (with context) cost at least that.
    assert 0 < synth["flop_per_kf_floor"] <= synth["flop_per_kf_ours"]
    assert 0 < synth["fraction_of_ceiling"] < 1
    assert set(res["heads"]) == {"linear", "stage"}
    for r in res["heads"].values():
        assert r["e2e_kf_s"] > 0 and r["bare_kf_s"] > 0
