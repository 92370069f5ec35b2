"""bench/bench_stage.py's own check: STAGEHead against the script's naive dense implementation
(a Python loop over videos, dense N x N adjacency and N x N x 2F pair tensors, the official
code's structure), on the same parameters. The benchmark refuses to time when they disagree, so
this keeps it runnable, and it is a second, independent implementation of STAGE's forward."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_stage.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_stage", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ours_equals_the_naive_dense_implementation_on_query_actors():
    err = _load().check_equal(None)
    assert err < 1e-4
