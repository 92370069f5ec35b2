"""ablate: a tiny sweep on synthetic stores, its tables against the run directories, rerun skipping,
presets."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from stagecache.heads import HEADS
from stagecache.pipelines.ablation import jobs as ablate_mod  # where a run calls train
from stagecache.pipelines.ablation.sweep import AblateArgs, ablate, plan_runs, store_levels
from stagecache.pipelines.ablation.spec import load_spec, parse_spec, presets

torch.set_num_threads(1)


SPEC = {
    "name": "tiny",
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "device": "cpu"},
    "baseline": "lin",
    "configs": [
        {"name": "lin", "head": "linear"},
        {"name": "stg", "head": "stage", "head_args": {"num_layers": 1, "num_heads": 2}},
        {"name": "acar", "head": "acar"},  # needs kf_context: the synthetic store has none
        {"name": "aia", "unavailable": "not implemented"},
    ],
}


def _counting_train(monkeypatch):
    calls = []
    real = ablate_mod.train

    def counted(targs):
        calls.append(Path(targs.out_dir).name)
        return real(targs)

    monkeypatch.setattr(ablate_mod, "train", counted)
    return calls


def _percent(values) -> str:
    m = statistics.mean(values) * 100
    s = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def test_sweep_tables_and_rerun(stores, tmp_path, monkeypatch):
    tr, va = stores
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    calls = _counting_train(monkeypatch)
    args = AblateArgs(train_store=tr, val_store=va, out=str(out), spec_file=str(spec_file), progress=False)
    res = ablate(args, echo=lambda m: None)

    # 2 runnable configs x 2 seeds trained; acar skipped for its missing level, aia unavailable.
    assert sorted(calls) == ["lin-s0", "lin-s1", "stg-s0", "stg-s1"]
    assert res["status"]["acar-s0"] == "skipped: needs context"
    assert res["status"]["aia-s1"] == "skipped: not implemented"
    for f in ("results.csv", "results.md", "spec.json", "gain_stg_vs_lin.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "spec.json").read_text())
    assert [c["name"] for c in saved["spec"]["configs"]] == ["lin", "stg", "acar", "aia"]

    # results.csv: one row per run, numbers equal to the run directories' files.
    groups = {"pose": [1, 2, 3], "person-object": [4, 5], "person-person": [6], "temporal": [7]}
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["lin-s0", "lin-s1", "stg-s0", "stg-s1", "acar-s0", "acar-s1",
                                         "aia-s0", "aia-s1"]
    maps, gmaps = {}, {}
    for r in rows[:4]:
        run = out / "runs" / r["name"]
        best = json.loads((run / "summary.json").read_text())["best_val_map"]
        assert float(r["val_map"]) == pytest.approx(best, abs=1e-6)
        pc = json.loads((run / "per_class_ap.json").read_text())["per_class"]
        for g, ids in groups.items():
            aps = [pc[str(i)] for i in ids if pc[str(i)] is not None]
            want = sum(aps) / len(aps) if aps else math.nan
            got = float(r[f"map_{g}"]) if r[f"map_{g}"] else math.nan
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-6), (r["name"], g)
            gmaps.setdefault((r["config"], g), []).append(want)
        maps.setdefault(r["config"], []).append(best)
    assert rows[4]["status"] == "skipped: needs context" and rows[4]["val_map"] == ""

    # results.md: mean ± sample std over seeds, per configuration and per group.
    md = (out / "results.md").read_text()
    for cfg in ("lin", "stg"):
        assert f"| 2/2 | {_percent(maps[cfg])} | done |" in md
        assert _percent(gmaps[(cfg, "pose")]) in md
    assert "skipped: needs context" in md and "skipped: not implemented" in md

    # Rerun: every finished run is skipped, the report is rebuilt identically.
    csv_before = (out / "results.csv").read_text()
    ablate(args, echo=lambda m: None)
    assert len(calls) == 4
    assert (out / "results.csv").read_text() == csv_before

    # An interrupted run (checkpoint, no summary) is resumed, only that one.
    (out / "runs" / "stg-s1" / "summary.json").unlink()
    ablate(args, echo=lambda m: None)
    assert calls[4:] == ["stg-s1"]

    # A rerun with other training arguments into the same directory is refused, nothing overwritten.
    changed = dict(SPEC, train=dict(SPEC["train"], epochs=2))
    spec_file.write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match="other arguments"):
        ablate(args, echo=lambda m: None)
    assert (out / "results.csv").read_text() == csv_before

    # The CLI on the finished sweep (flags override seeds): no training, exit 0.
    spec_file.write_text(yaml.safe_dump(SPEC))
    from stagecache.pipelines.commands.ablate import ablate_cli

    r = CliRunner().invoke(ablate_cli, ["--spec", str(spec_file), "--train-store", tr, "--val-store", va,
                                        "--out", str(out), "--seeds", "0,1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 5


def test_grid_table_and_flags(stores, tmp_path, monkeypatch):
    tr, va = stores
    calls = _counting_train(monkeypatch)
    args = AblateArgs(train_store=tr, val_store=va, out=str(tmp_path / "g"), heads=["stage"],
                      grid={"num_heads": [1, 2], "num_layers": [1]}, seeds=[0],
                      train={"epochs": 1, "lr": 1e-3, "device": "cpu"}, progress=False)
    res = ablate(args, echo=lambda m: None)
    assert sorted(calls) == ["stage-num_heads1-num_layers1-s0", "stage-num_heads2-num_layers1-s0"]
    assert res["report"]["baseline"] == "stage-num_heads1-num_layers1"  # no linear config: the first one
    # A grid table over the same runs via a spec (runs are found finished).
    spec = parse_spec({"seeds": [0], "train": {"epochs": 1, "lr": 1e-3, "device": "cpu"}, "configs": [
        {"name": "stage", "head": "stage", "grid": {"num_heads": [1, 2], "num_layers": [1]}}],
        "grid_table": {"config": "stage", "rows": "num_heads", "cols": "num_layers"}})
    runs = plan_runs(spec, args)
    from stagecache.pipelines.ablation.report import write_report

    write_report(Path(args.out), spec, runs, {r.name: "done" for r in runs}, train_store=tr)
    grid = (Path(args.out) / "grid.md").read_text()
    for h in (1, 2):
        best = json.loads((Path(args.out) / "runs" / f"stage-num_heads{h}-num_layers1-s0" / "summary.json")
                          .read_text())["best_val_map"]
        assert f"| {h} | {best * 100:.2f} |" in grid


def test_presets_expand():
    names = set(presets())
    assert {"stage-table6", "stage-table8", "acar-table1", "all-heads"} <= names
    t6 = parse_spec(load_spec("stage-table6")[0])
    assert len(t6.configs) == 9
    assert {(c.head_args["num_heads"], c.head_args["num_layers"]) for c in t6.configs} == \
        {(h, l) for h in (2, 4, 8) for l in (1, 2, 3)}
    t8 = parse_spec(load_spec("stage-table8")[0])
    assert [c.name for c in t8.configs][:2] == ["linear", "stage"] and len(t8.configs) == 8
    switches = [c.head_args for c in t8.configs[2:]]
    assert {"proximity": False} .items() <= switches[0].items() and switches[4]["attention"] == "dot"
    assert switches[5]["adjacency"] == "feature"
    a1 = parse_spec(load_spec("acar-table1")[0])
    assert {c.head for c in a1.configs if not c.unavailable} == {"linear", "sto", "acrn", "acar"}
    assert len(a1.configs) == 12 and sum(bool(c.unavailable) for c in a1.configs) == 5
    allh = parse_spec(load_spec("all-heads")[0])
    assert sorted(c.head for c in allh.configs) == sorted(HEADS)
    # Seeds multiply the runs.
    args = AblateArgs(train_store="t", val_store="v", out="/nonexistent/o", preset="stage-table8", seeds=[0, 1, 2])
    assert len(plan_runs(t8, args)) == 8  # the spec's own seeds ([0])
    t8.seeds = [0, 1, 2]
    assert len(plan_runs(t8, args)) == 24


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown head 'nope'"):
        parse_spec({"configs": [{"name": "x", "head": "nope"}]})
    with pytest.raises(ValueError, match="duplicate"):
        parse_spec({"configs": [{"head": "linear"}, {"head": "linear"}]})
    with pytest.raises(ValueError, match="unknown or managed train field"):
        parse_spec({"train": {"head": "stage"}, "configs": [{"head": "linear"}]})
    with pytest.raises(ValueError, match="unknown preset"):
        load_spec("nope")
    with pytest.raises(ValueError, match="exactly one"):
        AblateArgs(train_store="t", val_store="v", out="o")


def test_store_levels(stores):
    tr, _ = stores
    assert store_levels(tr) == {"objects", "tracks"}
