"""Bad inputs, one row each, through the real commands (the umbrella `stagecache` group, which takes
the console entry points' error path): exit status 1, one stderr line `Error: ...` naming the file
and line or the store, group and array, no traceback, and nothing under the test's directory
created or changed (no empty run directory, a hostile pickle's marker file never written).

`cache verify` is a report rather than an error: its row is a test of its own at the end.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stagecache.pipelines.commands.cli import main
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP
from tests.pipelines.commands.bad_input_helpers import RunsCode, snapshot, write_pickle, write_store

LABEL_MAP = str(DEFAULT_LABEL_MAP)
PRED = "v,0902,0.1,0.1,0.5,0.5,1,0.9\n"


def _csv(d: Path, name: str, text: str) -> str:
    (d / name).write_text(text)
    return str(d / name)


def _extract(d: Path, *extra: str) -> list[str]:
    (d / "videos").mkdir(exist_ok=True)
    return ["extract", "features", "--split", "train", "--videos", str(d / "videos"), "--label-map", LABEL_MAP,
            "--out", str(d / "out" / "s.zarr"), "--device", "cpu", "--no-progress", *extra]


def _train(tr: str, va: str, out: Path, *extra: str) -> list[str]:
    return ["train-head", "--head", "linear", "--train-store", tr, "--val-store", va, "--out", str(out),
            "--epochs", "1", "--val-score-threshold", "0.5", "--device", "cpu", "--no-progress", *extra]


def _stores(d: Path, **val_kw) -> tuple[str, str]:
    return write_store(d / "train.zarr"), write_store(d / "val.zarr", split="val", videos=("vc",), **val_kw)


def _trained_run(d: Path) -> tuple[str, str, Path]:
    """A finished run, made outside the checked command (its files then must stay as they are)."""
    from stagecache.pipelines.training.train import TrainArgs, train

    tr, va = _stores(d)
    train(TrainArgs(train_store=tr, val_store=va, head="linear", out_dir=str(d / "run"), epochs=1,
                    progress=False, val_score_threshold=0.5, device="cpu"))
    return tr, va, d / "run"


def _hostile_checkpoint(path: Path, d: Path) -> None:
    torch.save({"model": {}, "config": {}, "evil": RunsCode(d / "marker")}, path)


# ----------------------------------------------------------------------------- the cases
# Each builds its inputs in `d` and returns (argv, strings the error line must contain).

def evaluate_gt_nan(d):
    gt = _csv(d, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\nv,0903,0.1,nan,0.5,0.5,1\n")
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [f"{gt}:2"]


def evaluate_gt_x2_below_x1(d):
    gt = _csv(d, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\nv,0903,0.6,0.1,0.5,0.5,1\n")
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [f"{gt}:2"]


def evaluate_empty_gt(d):
    gt = _csv(d, "gt.csv", "")
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [gt]


def evaluate_gt_without_label_map_classes(d):
    gt = _csv(d, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,2\n")  # id 2 is not among the 60 evaluated classes
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [gt, "no rows of the label map"]


def evaluate_gt_given_as_predictions(d):
    gt = _csv(d, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\n")
    pred = _csv(d, "p.csv", "v,0902,0.1,0.1,0.5,0.5,1,3\n")  # 8 columns, integer last: a GT file with person ids
    return ["evaluate", "--gt", gt, "--pred", pred], [pred]


def evaluate_not_a_number(d):
    gt = _csv(d, "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1\nv,0903,0.1,abc,0.5,0.5,1\n")
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [f"{gt}:2", "abc"]


def evaluate_binary_file(d):
    (d / "gt.csv").write_bytes(bytes(range(256)) * 4)
    gt = str(d / "gt.csv")
    return ["evaluate", "--gt", gt, "--pred", _csv(d, "p.csv", PRED)], [gt]


def extract_proposals_7_columns_among_8(d):
    props = _csv(d, "props.csv", "v,0902,0.1,0.1,0.5,0.5,-1,0.9\nv,0903,0.1,0.1,0.5,0.5,-1\n")
    return _extract(d, "--proposals", props, "--random-init"), [f"{props}:2"]


def extract_hostile_proposals_pickle(d):
    props = write_pickle(d / "props.pkl", {"v,0902": np.zeros((1, 5)), "x": RunsCode(d / "marker")})
    return _extract(d, "--proposals", props, "--random-init"), [props, "builtins.exec", "--trust-pickle"]


def _video_v(d: Path) -> None:
    """A video `v` for the proposals to name (never decoded: the run stops at the checkpoint)."""
    (d / "videos").mkdir(exist_ok=True)
    (d / "videos" / "v.mp4").write_bytes(b"\x00")


def extract_hostile_pyslowfast_checkpoint(d):
    props = _csv(d, "props.csv", "v,0902,0.1,0.1,0.5,0.5,-1,0.9\n")
    _video_v(d)
    ckpt = d / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": {}, "cfg": "x", "evil": RunsCode(d / "marker")}, ckpt)
    return (_extract(d, "--proposals", props, "--backbone", "slow_r50", "--backbone-args", '{"stem_dim_out": 4}',
                     "--checkpoint", str(ckpt)), [str(ckpt), "exec", "--trust-pickle"])


def extract_hostile_caffe2_pickle(d):
    props = _csv(d, "props.csv", "v,0902,0.1,0.1,0.5,0.5,-1,0.9\n")
    _video_v(d)
    ckpt = write_pickle(d / "SLOW_8x8_R50.pkl", {"blobs": {"conv1_w": np.zeros(2)}, "x": RunsCode(d / "marker")})
    return (_extract(d, "--proposals", props, "--backbone", "slow_r50", "--backbone-args", '{"stem_dim_out": 4}',
                     "--checkpoint", ckpt), [ckpt, "builtins.exec"])


def extract_hostile_jhmdb_gt_pickle(d):
    gt = write_pickle(d / "JHMDB-GT.pkl", {"labels": ["run"], "gttubes": RunsCode(d / "marker")})
    (d / "videos").mkdir()
    return (["extract", "features", "--dataset", "jhmdb", "--annotations", gt, "--split", "1", "--side", "train",
             "--videos", str(d / "videos"), "--out", str(d / "out" / "s.zarr"), "--random-init", "--device", "cpu"],
            [gt, "builtins.exec"])


def detections_keyframes_not_a_number(d):
    kf = _csv(d, "kf.csv", "video,timestamp\nv,0902\nv,09o3\n")
    (d / "videos").mkdir()
    return (["extract", "detections", "--video-dir", str(d / "videos"), "--out", str(d / "det"),
             "--keyframes", kf, "--device", "cpu"], [f"{kf}:3"])


def cache_import_stage_key_without_features(d):
    import h5py

    with h5py.File(d / "feats.h5", "w") as f:
        g = f.create_group("-5KQ66BBWC4_0902")
        g["boxes"] = np.full((1, 4), 0.1, np.float32)
        g["labels"] = np.zeros((1, 81), np.float32)
    return (["cache", "import", "--layout", "stage-slowfast", str(d / "feats.h5"), str(d / "out" / "s.zarr")],
            [str(d / "feats.h5"), "-5KQ66BBWC4_0902", "features"])


def train_head_arg_not_a_boolean(d):
    tr, va = _stores(d)
    return _train(tr, va, d / "run", "--head", "stage", "--head-arg", "temporal=no-way"), ["--head-arg temporal=no-way"]


def train_head_arg_unknown_key(d):
    tr, va = _stores(d)
    return _train(tr, va, d / "runs" / "r1", "--head-arg", "layers=2"), ["head linear has no option 'layers'", "dropout"]


def train_nan_features(d):
    tr = write_store(d / "train.zarr", nan_at=("vb", "actor_pooled", 2))
    va = write_store(d / "val.zarr", split="val", videos=("vc",))
    return _train(tr, va, d / "run"), [tr, "group feat", "array actor_pooled", "video vb"]


def train_val_dimension_mismatch(d):
    tr, va = _stores(d, dim=12)
    return _train(tr, va, d / "run"), [tr, va, "group feat", "array actor_pooled", "[8]", "[12]"]


def train_missing_level(d):
    tr, va = _stores(d)
    return _train(tr, va, d / "run", "--head", "acrn"), [tr, "group feat", "kf_context", "--save context"]


def train_label_names_differ(d):
    tr, va = _stores(d, label_names=["stand", "sit", "run"])
    return _train(tr, va, d / "run"), [tr, va, "label_names"]


def train_store_missing(d):
    tr, _ = _stores(d)
    return _train(tr, str(d / "nowhere.zarr"), d / "run"), [str(d / "nowhere.zarr")]


def train_manifest_schema_version(d):
    tr, va = _stores(d)
    man = sorted((Path(va) / "commits").glob("feat-*.json"))[0]
    man.write_text(json.dumps({**json.loads(man.read_text()), "schema_version": 99}))
    return _train(tr, va, d / "run"), [va, man.name, "schema_version 99"]


def train_into_an_existing_run(d):
    tr, va = _stores(d)
    (d / "run").mkdir()
    (d / "run" / "last.pt").write_bytes(b"an earlier run")
    return _train(tr, va, d / "run"), [str(d / "run"), "--resume"]


def train_resume_hostile_checkpoint(d):
    tr, va, run = _trained_run(d)
    _hostile_checkpoint(run / "last.pt", d)
    return _train(tr, va, run, "--resume"), [str(run / "last.pt"), "builtins.exec"]


def predict_store_of_another_dim(d):
    _, _, run = _trained_run(d)
    other = write_store(d / "wide.zarr", split="val", videos=("vc",), dim=12)
    return (["predict", "--run", str(run), "--store", other, "--out", str(d / "out" / "p.csv"), "--device", "cpu"],
            [other, "actor_pooled", "12-d", "8-d"])


def predict_run_without_checkpoint(d):
    _, va = _stores(d)
    (d / "run").mkdir()
    return (["predict", "--run", str(d / "run"), "--store", va, "--out", str(d / "out" / "p.csv")],
            [str(d / "run" / "best.pt"), "finished train-head run"])


def predict_nan_features(d):
    _, _, run = _trained_run(d)
    bad = write_store(d / "nan.zarr", split="val", videos=("vc",), nan_at=("vc", "actor_pooled", 1))
    return (["predict", "--run", str(run), "--store", bad, "--out", str(d / "out" / "p.csv"), "--device", "cpu"],
            ["predict store", bad, "group feat", "array actor_pooled", "video vc"])


def predict_hostile_checkpoint(d):
    _, va, run = _trained_run(d)
    _hostile_checkpoint(run / "best.pt", d)
    return (["predict", "--run", str(run), "--store", va, "--out", str(d / "out" / "p.csv"), "--device", "cpu"],
            [str(run / "best.pt"), "builtins.exec"])


CASES = [
    evaluate_gt_nan,
    evaluate_gt_x2_below_x1,
    evaluate_empty_gt,
    evaluate_gt_given_as_predictions,
    evaluate_gt_without_label_map_classes,
    evaluate_not_a_number,
    evaluate_binary_file,
    extract_proposals_7_columns_among_8,
    extract_hostile_proposals_pickle,
    extract_hostile_pyslowfast_checkpoint,
    extract_hostile_caffe2_pickle,
    extract_hostile_jhmdb_gt_pickle,
    detections_keyframes_not_a_number,
    cache_import_stage_key_without_features,
    train_head_arg_not_a_boolean,
    train_head_arg_unknown_key,
    train_nan_features,
    train_val_dimension_mismatch,
    train_missing_level,
    train_label_names_differ,
    train_store_missing,
    train_manifest_schema_version,
    train_into_an_existing_run,
    train_resume_hostile_checkpoint,
    predict_hostile_checkpoint,
    predict_nan_features,
    predict_store_of_another_dim,
    predict_run_without_checkpoint,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_is_one_error_line_and_changes_nothing(case, tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # default output paths (runs/, cache/) would land here too
    argv, expected = case(tmp_path)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(main, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no traceback
    # A run's own console lines (`[head] ...`, e.g. the split-source choice) may come first; the
    # error is the one other line, and the last.
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("[")]
    assert r.exit_code == 1, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and r.stderr.splitlines()[-1] == lines[0], r.stderr
    for s in expected:
        assert s in lines[0], (s, lines[0])
    assert "Traceback" not in r.output
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "marker").exists()


def test_cache_verify_reports_a_store_without_committed_fragments(tmp_path, monkeypatch):
    from stagecache.extract.store import StoreWriter

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    w = StoreWriter(str(tmp_path / "empty.zarr"), split="val", label_ids=[1], label_names=["a"])
    w.declare_group("base", {})
    w.declare_group("feat", {})
    w.close()  # groups declared, no video committed (every video failed, or a kill before the first commit)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(main, ["cache", "verify", str(tmp_path / "empty.zarr")])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1
    assert "no video committed" in r.stderr and f"{tmp_path / 'empty.zarr'}: 1 problem(s)" in r.stderr
    assert "Traceback" not in r.output and snapshot(tmp_path) == before
