"""Inputs that were accepted silently or ended in a traceback (issue 31 items 3 and 6, issue 32 item 3),
one row each through the real commands (the umbrella `stagecache` group, the console entry points'
error path): exit status 1, one stderr line `Error: ...` naming what was wrong, no traceback, and
nothing under the test's directory created or changed. The harness is test_bad_inputs.py's.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from stagecache.pipelines.commands.cli import main
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP
from tests.pipelines.commands.bad_input_helpers import snapshot, write_store

torch.set_num_threads(1)

GT = "v,0902,0.1,0.1,0.5,0.5,1\nv,0903,0.2,0.2,0.6,0.6,1\n"
PRED = "v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,0903,0.2,0.2,0.6,0.6,1,0.8\n"


def _file(d: Path, name: str, text: str) -> str:
    (d / name).write_text(text)
    return str(d / name)


def _stores(d: Path, levels=()) -> tuple[str, str]:
    return (write_store(d / "train.zarr", levels=levels),
            write_store(d / "val.zarr", split="val", videos=("vc",), levels=levels))


def _trained_run(d: Path, head: str = "linear", levels=()) -> tuple[str, str, Path]:
    """A finished run, made outside the checked command (its files then must stay as they are)."""
    from stagecache.pipelines.training.train import TrainArgs, train

    tr, va = _stores(d, levels)
    train(TrainArgs(train_store=tr, val_store=va, head=head, out_dir=str(d / "run"), epochs=1, progress=False,
                    val_score_threshold=0.5, device="cpu", tensorboard=False))
    return tr, va, d / "run"


def _ablate(tr: str, va: str, out: Path, *extra: str) -> list[str]:
    return ["ablate", "--train-store", tr, "--val-store", va, "--out", str(out), "--epochs", "1", "--device", "cpu",
            "--no-progress", *extra]


def _extract(d: Path, *extra: str) -> list[str]:
    (d / "videos").mkdir(exist_ok=True)
    props = _file(d, "props.csv", "v,0902,0.1,0.1,0.5,0.5,-1,0.9\n")
    return ["extract", "features", "--split", "train", "--videos", str(d / "videos"), "--label-map",
            str(DEFAULT_LABEL_MAP), "--proposals", props, "--random-init", "--backbone", "slow_r50",
            "--out", str(d / "out" / "s.zarr"), "--device", "cpu", "--no-progress", *extra]


# ----------------------------------------------------------------------------- the cases
# Each builds its inputs in `d` and returns (argv, strings the error line must contain).

def ablate_spec_head_arg_misspelt(d):
    tr, va = _stores(d)
    spec = _file(d, "spec.yaml", "configs:\n  - {name: lin, head: linear, head_args: {dropuot: 0.1}}\n")
    return _ablate(tr, va, d / "sweep", "--spec", spec), [spec, "configs[0]", "'dropuot'", "dropout"]


def ablate_grid_value_not_a_float(d):
    tr, va = _stores(d)
    return (_ablate(tr, va, d / "sweep", "--head", "linear", "--grid", "dropout=abc"),
            ["dropout", "float", "'abc'"])


def ablate_grid_value_the_head_refuses(d):
    # typed right, refused by the head built at the stores' dims: was a row "skipped: cannot build the head"
    tr, va = _stores(d)
    return (_ablate(tr, va, d / "sweep", "--head", "linear", "--grid", "dropout=0.1,2.0"),
            ["config linear-dropout2.0", "dropout", "2.0"])


def ablate_groups_file_corrupt(d):
    tr, va = _stores(d)
    groups = _file(d, "groups.json", "{not json")
    return _ablate(tr, va, d / "sweep", "--head", "linear", "--groups", groups), [groups]


def train_pose_id_not_in_the_store(d):
    tr, va = _stores(d)
    return (["train-head", "--head", "linear", "--train-store", tr, "--val-store", va, "--out", str(d / "run"),
             "--epochs", "1", "--device", "cpu", "--no-progress", "--val-score-threshold", "0.5",
             "--loss", "pose_softmax", "--pose-ids", "99"], ["--pose-ids 99", tr])


def evaluate_groups_file_corrupt(d):
    groups = _file(d, "groups.json", "{not json")
    return (["evaluate", "--gt", _file(d, "gt.csv", GT), "--pred", _file(d, "p.csv", PRED), "--groups", groups],
            [groups, "class-groups JSON"])


def evaluate_groups_file_of_strings(d):
    groups = _file(d, "groups.json", '{"pose": ["stand", "sit"]}')
    return (["evaluate", "--gt", _file(d, "gt.csv", GT), "--pred", _file(d, "p.csv", PRED), "--groups", groups],
            [groups, "'pose'", "integer class ids"])


def evaluate_plot_by_group_with_a_corrupt_groups_file(d):
    groups = _file(d, "groups.json", '["pose"]')
    return (["evaluate", "--gt", _file(d, "gt.csv", GT), "--pred", _file(d, "p.csv", PRED), "--groups", groups,
             "--plots", str(d / "plots"), "--plot-by", "group"], [groups])


def evaluate_plot_by_group_without_groups(d):
    lm = _file(d, "lm.pbtxt", 'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n')
    return (["evaluate", "--gt", _file(d, "gt.csv", GT), "--pred", _file(d, "p.csv", PRED), "--label-map", lm,
             "--plots", str(d / "plots"), "--plot-by", "group"], ["--plot-by group", lm, "--groups"])


def evaluate_gt_box_outside_the_frame(d):
    gt = _file(d, "gt.csv", GT.replace("0.6,0.6,1", "1.5,0.6,1"))
    return ["evaluate", "--gt", gt, "--pred", _file(d, "p.csv", PRED)], [f"{gt}:2", "x2=1.5", "outside [0, 1]"]


def evaluate_predicted_box_inverted(d):
    pred = _file(d, "p.csv", PRED.replace("0.2,0.2,0.6,0.6", "0.7,0.2,0.6,0.6"))
    return ["evaluate", "--gt", _file(d, "gt.csv", GT), "--pred", pred], [f"{pred}:2", "inverted box"]


def evaluate_gt_mostly_outside_the_label_map(d):
    # 1 row of 4 in the 60-class list: the label map is not this dataset's (issue 32, item 3)
    gt = _file(d, "gt.csv", "".join(f"v,0902,0.1,0.1,0.5,0.5,{i}\n" for i in (1, 2, 16, 18)))
    return (["evaluate", "--gt", gt, "--pred", _file(d, "p.csv", PRED)],
            [gt, "3 of the ground truth's 4 rows", "2,16,18", "--label-map"])


def predict_store_with_other_label_names(d):
    _, _, run = _trained_run(d)
    other = write_store(d / "other.zarr", split="val", videos=("vc",), label_names=["stand", "sit", "run"])
    return (["predict", "--run", str(run), "--store", other, "--out", str(d / "out" / "p.csv"), "--device", "cpu"],
            [other, str(run), "label_names", "id 3", "'run'", "'walk'"])


def write_bank_store_with_other_label_names(d):
    _, _, run = _trained_run(d, head="acar", levels=("kf_context",))
    other = write_store(d / "other.zarr", split="val", videos=("vc",), levels=("kf_context",),
                        label_names=["stand", "sit", "run"])
    return (["write-bank", "--run", str(run), "--store", other, "--device", "cpu"],
            [other, "label_names", "'run'", "'walk'"])


def write_bank_store_without_the_heads_level(d):
    _, _, run = _trained_run(d, head="acar", levels=("kf_context",))
    bare = write_store(d / "bare.zarr", split="val", videos=("vc",))
    return ["write-bank", "--run", str(run), "--store", bare, "--device", "cpu"], [bare, "kf_context"]


def predict_weights_unlike_their_config(d):
    _, va, run = _trained_run(d)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["model"] = {k: torch.zeros(3) for k in ckpt["model"]}  # another head's weights
    torch.save(ckpt, run / "best.pt")
    return (["predict", "--run", str(run), "--store", va, "--out", str(d / "out" / "p.csv"), "--device", "cpu"],
            [str(run / "best.pt"), "do not fit"])


def train_resume_truncated_last_checkpoint(d):
    tr, va, run = _trained_run(d)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    return (["train-head", "--head", "linear", "--train-store", tr, "--val-store", va, "--out", str(run),
             "--epochs", "2", "--device", "cpu", "--no-progress", "--val-score-threshold", "0.5", "--resume",
             "--no-tensorboard"], [str(run / "last.pt"), "truncated"])


def extract_sampling_args_misspelt(d):
    return _extract(d, "--sampling-args", '{"num_framez": 4}'), ["--sampling-args", "num_framez", "frames"]


def extract_backbone_args_misspelt(d):
    return (_extract(d, "--backbone-args", '{"stem_dim_outt": 4}'),
            ["--backbone-args", "slow_r50", "stem_dim_outt", "stem_dim_out"])


def cache_info_on_a_csv(d):
    csv = _file(d, "a.csv", "a,b\n1,2\n")
    return ["cache", "info", csv], [csv, "not a feature store"]


def extract_tracks_on_a_json_file(d):
    js = _file(d, "t.json", "{}")
    return ["extract", "tracks", "--store", js], [js, "not a feature store"]


def cache_export_into_a_missing_directory(d):
    store = write_store(d / "s.zarr")
    out = d / "nowhere" / "s.h5"
    return ["cache", "export", store, str(out)], [str(out.parent), "does not exist"]


CASES = [
    ablate_spec_head_arg_misspelt,
    ablate_grid_value_not_a_float,
    ablate_grid_value_the_head_refuses,
    ablate_groups_file_corrupt,
    train_pose_id_not_in_the_store,
    evaluate_groups_file_corrupt,
    evaluate_groups_file_of_strings,
    evaluate_plot_by_group_with_a_corrupt_groups_file,
    evaluate_plot_by_group_without_groups,
    evaluate_gt_box_outside_the_frame,
    evaluate_predicted_box_inverted,
    evaluate_gt_mostly_outside_the_label_map,
    predict_store_with_other_label_names,
    write_bank_store_with_other_label_names,
    write_bank_store_without_the_heads_level,
    predict_weights_unlike_their_config,
    train_resume_truncated_last_checkpoint,
    extract_sampling_args_misspelt,
    extract_backbone_args_misspelt,
    cache_info_on_a_csv,
    extract_tracks_on_a_json_file,
    cache_export_into_a_missing_directory,
]

LOADS_FIRST = {train_resume_truncated_last_checkpoint}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_is_one_error_line_and_changes_nothing(case, tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # default output paths (runs/, cache/) would land here too
    argv, expected = case(tmp_path)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(main, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no traceback
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ") or "Traceback" in ln]
    assert r.exit_code == 1, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    # a resume finds its checkpoint damaged after the stores loaded: their notes come first
    assert len(r.stderr.splitlines()) == 1 or (case in LOADS_FIRST and lines[0] == r.stderr.splitlines()[-1]), r.stderr
    for s in expected:
        assert s in lines[0], (s, lines[0])
    assert "Traceback" not in r.output
    assert snapshot(tmp_path) == before


def test_cache_verify_with_a_label_map_compares_the_names(tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    store = write_store(tmp_path / "s.zarr")  # ids 1, 2, 3: stand, sit, walk
    lm = _file(tmp_path, "lm.pbtxt", "".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n'
                                             for i, n in zip([1, 2, 3], ["stand", "sit", "run"])))
    before = snapshot(tmp_path)
    r = CliRunner().invoke(main, ["cache", "verify", store, "--label-map", lm, "--no-progress"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, r.output
    assert f"label names differ from {lm}: id 3 is 'walk' in the store, 'run' in the label map" in r.output
    assert "Traceback" not in r.output and snapshot(tmp_path) == before
    same = _file(tmp_path, "same.pbtxt", "".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n'
                                                 for i, n in zip([1, 2, 3], ["stand", "sit", "walk"])))
    r = CliRunner().invoke(main, ["cache", "verify", store, "--label-map", same, "--no-progress"])
    assert r.exit_code == 0, r.output
