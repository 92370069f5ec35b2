"""`extract features`' record of the options that change what it stores, the resume check against
it, `--restart`, the side file, `--excluded`, and the refusal of an extraction that would store
nothing (issue 32, item 1)."""
import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from stagecache.extract import ava_io
from stagecache.extract.features import run_extract
from stagecache.extract.features_args import ExtractArgs
from stagecache.extract.features_record import (BASE, FEATURES, EmptyExtractionError, OptionsChangedError,
                                                option_record, stored_kind)
from stagecache.extract.store import open_store
from stagecache.extract.store.io import read_root_attrs, Location
from tests.extract.store.helpers import fork_call, wait_child
from stagecache.extract.synthetic import make_video_dataset
from tests.extract.test_features import _args, _load


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """Two 5 s synthetic videos whose AVA keyframes are 902 and 903 (video time = timestamp - 900)."""
    d = tmp_path_factory.mktemp("ds")
    make_video_dataset(d, n_videos=2, seconds=5, width=96, height=64, splits=("train",))
    return d


def _meta(out, group):
    return json.loads((out / "meta" / f"{group}.json").read_text())["attrs"]


def test_every_option_is_recorded_unless_it_says_it_changes_nothing(ds, tmp_path):
    args = _args(ds, tmp_path / "r.zarr")
    rec = option_record(args)
    fields = dataclasses.fields(ExtractArgs)
    want = {k: {f.name for f in fields if stored_kind(f) == k} for k in (BASE, FEATURES)}
    want[BASE] = (want[BASE] - {"excluded"}) | {"excluded_file", "excluded_timestamps"}
    assert {k: set(v) for k, v in rec.items()} == want
    assert {"time_offset", "fps", "annotations", "proposals", "min_proposal_score", "label_iou"} <= want[BASE]
    assert {"backbone", "checkpoint", "backbone_kwargs", "sampling_overrides", "roi_resolution", "save"} <= want[FEATURES]
    # a field without the key (an option added later) is recorded with the features
    assert stored_kind(dataclasses.field(metadata={"help": "new"})) == FEATURES
    assert rec[BASE]["annotations"] == "train.csv"  # file names: the inputs may move
    assert rec[FEATURES]["backbone_kwargs"] == {"model_depth": 50, "stem_dim_outs": [8, 1]}


def test_empty_extraction_fails_naming_the_time_offset_then_the_right_one_works(ds, tmp_path):
    out = tmp_path / "e.zarr"
    with pytest.raises(EmptyExtractionError) as e:  # AVA timestamps 902.. on 5 s videos at offset 0
        run_extract(_args(ds, out, time_offset=None))
    msg = str(e.value)
    assert msg.startswith("video syn_000: all 2 keyframe(s) (902-903 s) fall outside the video (0-5 s) at "
                          "--time-offset 0; AVA timestamps need --time-offset 900")
    assert msg.endswith("(and 1 more video(s) like it)") and "\n" not in msg
    assert not out.exists()  # nothing written: the corrected rerun is a fresh extraction
    s = run_extract(_args(ds, out))
    assert s["done"] == 2 and s["keyframes"] == 4 and not s["failed"]


def test_no_keyframe_at_all_and_no_video_found_are_errors(ds, tmp_path):
    ann = ava_io.read_annotations(ds / "annotations/train.csv")
    empty = tmp_path / "none.csv"
    ava_io.write_annotations(empty, ann.select(np.zeros(len(ann.video), bool)) if hasattr(ann, "select") else
                             ava_io.Annotations(video=[], timestamp=[], box=np.zeros((0, 4)), action=[], person=[]))
    with pytest.raises(EmptyExtractionError, match="no keyframe at all"):
        run_extract(_args(ds, tmp_path / "n.zarr", annotations=str(empty), proposals=None))
    (tmp_path / "novideos").mkdir()
    with pytest.raises(EmptyExtractionError, match=r"none of the 2 video\(s\) to extract \(e.g. 'syn_000'\) is under"):
        run_extract(_args(ds, tmp_path / "m.zarr", videos=str(tmp_path / "novideos")))


def test_resume_with_other_options_names_each_option_and_side_file_agrees(ds, tmp_path):
    out = tmp_path / "o.zarr"
    run_extract(_args(ds, out))
    side = tmp_path / "o.slowfast_r50.extract.json"
    before = side.read_text()
    doc = json.loads(before)
    assert doc["store_attrs"]["base"] == _meta(out, "base") and doc["store_attrs"]["slowfast_r50"] == _meta(out, "slowfast_r50")
    assert _meta(out, "base")["time_offset"] == 900.0 and _meta(out, "slowfast_r50")["roi_resolution"] == 7
    with pytest.raises(OptionsChangedError) as e:
        run_extract(_args(ds, out, time_offset=0.0, min_proposal_score=0.5, roi_resolution=5))
    msg = str(e.value)
    assert "boxes ('base'): --min-proposal-score stored 0.0, given 0.5; --time-offset stored 900.0, given 0.0" in msg
    assert "features ('slowfast_r50'): --roi-resolution stored 7, given 5" in msg and "--restart" in msg
    assert side.read_text() == before  # the refused run changed nothing
    assert _meta(out, "base")["time_offset"] == 900.0
    assert run_extract(_args(ds, out))["skipped"] == 2  # the stored values resume


def test_restart_of_the_group_keeps_base_and_equals_a_fresh_run(ds, tmp_path):
    out, ref_out = tmp_path / "a.zarr", tmp_path / "ref.zarr"
    run_extract(_args(ds, out))
    run_extract(_args(ds, ref_out, roi_resolution=5, save=("roi",)))
    base_frags = sorted(os.listdir(out / "fragments"))
    s = run_extract(_args(ds, out, roi_resolution=5, save=("roi",), restart=True))
    assert s["done"] == 2
    assert _meta(out, "slowfast_r50")["roi_resolution"] == 5
    got, ref = _load(out)[0], _load(ref_out)[0]
    assert sorted(got) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    # base was kept (same box options): its fragments are still there
    assert {f for f in base_frags if f.startswith("base")} <= set(os.listdir(out / "fragments"))
    doc = json.loads((tmp_path / "a.slowfast_r50.extract.json").read_text())
    assert doc["store_attrs"]["slowfast_r50"] == _meta(out, "slowfast_r50")


def test_restart_with_other_box_options_refused_when_another_group_uses_base(ds, tmp_path):
    out = tmp_path / "b.zarr"
    run_extract(_args(ds, out))
    run_extract(_args(ds, out, backbone="slow_r50", backbone_kwargs=dict(stem_dim_out=4)))
    with pytest.raises(OptionsChangedError, match=r"would invalidate groups \['slow_r50'\]"):
        run_extract(_args(ds, out, min_proposal_score=0.5, restart=True))
    assert open_store(str(out)).missing("slowfast_r50") == []  # untouched


@pytest.mark.slow
def test_kill_during_restart_leaves_the_old_store_or_a_resumable_new_one(ds, tmp_path):
    """SIGKILL after each step of a restart that drops base and the group (4 fragments, removed
    data first, manifest last), then after each commit of the new run: the store is readable
    and its record describes what it holds; rerunning with --restart completes the new store."""
    ref_out = tmp_path / "ref.zarr"
    new = dict(min_proposal_score=0.5, flush_mb=0)
    run_extract(_args(ds, ref_out, **new))
    ref = _load(ref_out)[0]
    for n in range(1, 12):
        out = tmp_path / f"k{n}.zarr"
        run_extract(_args(ds, out, flush_mb=0))
        sig = wait_child(fork_call(lambda: run_extract(_args(ds, out, restart=True, **new)), kill_after=n))
        if sig == 0:
            break
        assert sig == signal.SIGKILL
        st = open_store(str(out))  # readable
        rec = _meta(out, "base") if (out / "meta/base.json").exists() else None
        if st.videos and rec is not None and rec["min_proposal_score"] == 0.0:
            # old data under the old record: a plain rerun with the new options is refused
            with pytest.raises(OptionsChangedError):
                run_extract(_args(ds, out, **new))
        s = run_extract(_args(ds, out, restart=True, **new))
        assert not s["failed"]
        got = _load(out)[0]
        assert sorted(got) == sorted(ref), n
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"kill after step {n}: {k}")
        assert _meta(out, "base")["min_proposal_score"] == 0.5
    assert n > 4, "the restart removes 4 fragments before the new run commits"


def test_excluded_timestamps_recorded_in_base_attrs(ds, tmp_path):
    exc = tmp_path / "ava_val_excluded_timestamps_v2.2.csv"
    ava_io.write_excluded(exc, [("syn_001", 903.0), ("syn_000", 902.0), ("other", 1000.0)])
    out = tmp_path / "x.zarr"
    run_extract(_args(ds, out, excluded=str(exc)))
    attrs = open_store(str(out)).groups["base"]
    assert attrs["excluded_file"] == exc.name
    assert attrs["excluded_timestamps"] == [["other", 1000], ["syn_000", 902], ["syn_001", 903]]
    assert read_root_attrs(Location(str(out)))["split"] == "train"
    plain = tmp_path / "p.zarr"
    run_extract(_args(ds, plain))
    assert open_store(str(plain)).groups["base"]["excluded_timestamps"] == []
    with pytest.raises(OptionsChangedError, match="--excluded stored None, given"):
        run_extract(_args(ds, plain, excluded=str(exc)))


def test_progress_bar_counts_keyframes_when_the_store_commits_them(ds, tmp_path, monkeypatch, capsys):
    import tqdm

    from stagecache.extract.store.commit import list_manifests

    out = tmp_path / "bar.zarr"
    seen = []  # (bar count after the update, keyframes the store had committed at that moment)

    class Recorder(tqdm.tqdm):
        def update(self, n=1):
            super().update(n)
            kf = sum(sum(m["kf_counts"]) for m in list_manifests(Location(str(out))) if m["group"] == "base")
            seen.append((self.n, kf))

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    run_extract(_args(ds, out, progress=True, flush_mb=0))  # one commit per video
    assert seen == [(2, 2), (4, 4)]
    seen.clear()
    run_extract(_args(ds, tmp_path / "one.zarr", progress=True))  # one commit at the end
    err = capsys.readouterr().err
    assert "loading backbone slowfast_r50 (random init)" in err
    assert "committing the last 2 video(s) to the store" in err


def test_cli_empty_extraction_is_one_error_line_and_exit_1(ds, tmp_path, capsys):
    from stagecache.pipelines.commands.cli import load_command, run

    out = tmp_path / "cli" / "train.zarr"
    argv = ["features", "--split", "train", "--videos", str(ds / "videos"), "--label-map",
            str(ds / "annotations/label_map.pbtxt"), "--annotations", str(ds / "annotations/train.csv"),
            "--out", str(out), "--device", "cpu", "--no-progress", "--random-init",
            "--backbone-args", json.dumps({"model_depth": 50, "stem_dim_outs": [8, 1]}),
            "--sampling-args", json.dumps({"frames": 4, "short_side": 64})]
    with pytest.raises(SystemExit) as e:
        run(load_command("extract"), args=argv, prog_name="extract")
    assert e.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--time-offset 900" in errors[0], errors
    assert not (tmp_path / "cli").exists()  # nothing written, the new directory removed


def test_resume_of_a_store_recorded_by_an_older_stagecache(ds, tmp_path):
    """A record without the newer keys: those are not compared, and the resume goes on."""
    out = tmp_path / "old.zarr"
    run_extract(_args(ds, out, limit_videos=1))
    for g, drop in (("base", ("label_map", "excluded_file", "excluded_timestamps", "dataset")),
                    ("slowfast_r50", ("save", "seed", "backbone_kwargs"))):
        p = out / "meta" / f"{g}.json"
        meta = json.loads(p.read_text())
        meta["attrs"] = {k: v for k, v in meta["attrs"].items() if k not in drop}
        p.write_text(json.dumps(meta))
    s = run_extract(_args(ds, out))
    assert s["done"] == 1 and s["skipped"] == 1
    assert "save" not in _meta(out, "slowfast_r50")  # the old record stays as it was
    with pytest.raises(OptionsChangedError, match="--roi-resolution stored 7, given 5"):
        run_extract(_args(ds, out, roi_resolution=5))  # the keys it holds are still compared
