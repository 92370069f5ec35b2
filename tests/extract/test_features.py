"""extract/features.py end to end on the synthetic AVA-format dataset with a tiny random SlowFast."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.extract import ava_io
from stagecache.extract.actors import RowBuilder
from stagecache.extract.backbones import build_backbone
from stagecache.extract.features import ExtractArgs, run_extract, shard_videos
from stagecache.extract.features_record import OptionsChangedError
from stagecache.extract.roi import pool_rois
from stagecache.extract.store import StoreError, open_store
from stagecache.extract.synthetic import make_video_dataset
from stagecache.core.boxes import box_iou
from stagecache.extract.video import VideoReader
from tests.extract.store.helpers import fork_call, wait_child
from tests.comparisons import assert_informative

torch.set_num_threads(1)
TINY = dict(model_depth=50, stem_dim_outs=(8, 1))
SAMPLING = dict(frames=4, short_side=64)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    make_video_dataset(d, n_videos=2, seconds=5, width=96, height=64, splits=("train",))
    return d


def _args(ds, out, **kw):
    a = dict(split="train", videos=str(ds / "videos"), label_map=str(ds / "annotations/label_map.pbtxt"),
             annotations=str(ds / "annotations/train.csv"), proposals=str(ds / "annotations/train_proposals.csv"),
             objects="precomputed", objects_file=str(ds / "annotations/train_objects.csv"),
             out=None if out is None else str(out), random_init=True, backbone_kwargs=TINY,
             sampling_overrides=SAMPLING, time_offset=900.0, num_workers=1, progress=False, batch_size=4)
    a.update(kw)
    return ExtractArgs(**a)


def _load(path):
    t = open_store(str(path)).load()
    return {k: v.numpy() for k, v in t.data.items()}, t


@pytest.fixture(scope="module")
def full_run(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "train.zarr"
    summary = run_extract(_args(ds, out, save=("roi", "temporal", "context"), context_grid=2))
    return out, summary


def test_store_rows_and_features_match_direct_computation(ds, full_run):
    out, summary = full_run
    assert summary["done"] == 2 and not summary["failed"] and summary["random_init"]
    data, t = _load(out)
    st = open_store(str(out))
    assert st.groups["slowfast_r50"]["random_init"] is True
    assert st.groups["slowfast_r50"]["sampling"]["frames"] == 4
    lm = ava_io.read_label_map(ds / "annotations/label_map.pbtxt")
    ann = ava_io.read_annotations(ds / "annotations/train.csv", lm)
    props = ava_io.read_proposals(ds / "annotations/train_proposals.csv")
    # base rows: GT first (score 1, person id, multi-hot of all its actions), then all proposals
    for k in range(len(t.kf_time)):
        v = t.video_names[int(t.kf_video[k])]
        ts = float(t.kf_time[k])
        a0, a1 = int(t.kf_actor_offset[k]), int(t.kf_actor_offset[k + 1])
        gt = data["base/actor_is_gt"][a0:a1]
        sel = (ann.video == v) & (np.abs(ann.timestamp - ts) < 1e-3)
        persons = sorted(set(ann.person[sel].tolist()))
        assert gt.sum() == len(persons)
        for j in range(int(gt.sum())):
            p = int(data["base/actor_track"][a0 + j])
            want = {lm.ids.index(int(x)) for x in ann.action[sel & (ann.person == p)]}
            assert set(np.flatnonzero(data["base/actor_labels"][a0 + j])) == want
            assert data["base/actor_score"][a0 + j] == 1.0
        psel = (props.video == v) & (np.abs(props.timestamp - ts) < 1e-3)
        np.testing.assert_allclose(data["base/actor_score"][a0 + int(gt.sum()):a1], props.score[psel])
        assert (data["base/actor_track"][a0 + int(gt.sum()):a1] == -1).all()
    # features: recompute keyframe 1 directly (read clip, backbone, RoI pool) and compare
    torch.manual_seed(0)
    bb = build_backbone("slowfast_r50", sampling_overrides=SAMPLING, **TINY).eval()
    k = 1
    v = t.video_names[int(t.kf_video[k])]
    a0, a1 = int(t.kf_actor_offset[k]), int(t.kf_actor_offset[k + 1])
    with VideoReader(ds / "videos" / f"{v}.mp4", short_side=64, time_offset=900.0) as r:
        clip = r.read_clip(float(t.kf_time[k]), bb.sampling.read_frames, bb.sampling.read_rate)
    with torch.no_grad():
        maps = bb(bb.pack(torch.from_numpy(clip[None])))
        ref = pool_rois(maps, torch.from_numpy(data["base/actor_box"][a0:a1]), torch.zeros(a1 - a0, dtype=torch.long),
                        input_size=clip.shape[1:3], stride=bb.stride, levels=("roi", "temporal", "context"),
                        context_grid=2)
    tol = dict(rtol=2e-3, atol=2e-3)  # the store keeps features as float16
    for level in ("pooled", "roi", "temporal"):
        assert_informative(ref[level], f"direct {level} features", min_len=2, above=tol["atol"])
    assert_close(torch.from_numpy(data["slowfast_r50/actor_pooled"][a0:a1]).float(), ref["pooled"], **tol)
    assert_close(torch.from_numpy(data["slowfast_r50/actor_roi"][a0:a1]).float(), ref["roi"], **tol)
    assert_close(torch.from_numpy(data["slowfast_r50/actor_temporal"][a0:a1]).float(), ref["temporal"], **tol)
    assert_close(torch.from_numpy(data["slowfast_r50/kf_context"][k]).float(), ref["context"][0], **tol)
    assert data["slowfast_r50/actor_pooled"].shape[1] == bb.out_channels
    cfg = json.loads((out.parent / "train.slowfast_r50.extract.json").read_text())
    assert cfg["args"]["backbone"] == "slowfast_r50" and cfg["summary"]["done"] == 2


def test_second_backbone_aligns_and_config_mismatch_refuses(ds, full_run, tmp_path):
    out, _ = full_run
    s = run_extract(_args(ds, out, backbone="slow_r50", backbone_kwargs=dict(stem_dim_out=4)))
    assert s["done"] == 2
    data, t = _load(out)
    assert data["slow_r50/actor_pooled"].shape == (len(data["base/actor_box"]), 128)
    # rerun: everything is committed
    assert run_extract(_args(ds, out, backbone="slow_r50", backbone_kwargs=dict(stem_dim_out=4)))["skipped"] == 2
    with pytest.raises(OptionsChangedError, match="other options") as e:
        run_extract(_args(ds, out, save=(), roi_resolution=5))
    assert "features ('slowfast_r50'): --save stored ['roi', 'temporal', 'context'], given []; " in str(e.value)
    assert "--roi-resolution stored 7, given 5;" in str(e.value) and "base" not in str(e.value)


def test_label_transfer_matches_direct_iou():
    ann = ava_io.Annotations(video=["v"] * 3, timestamp=[902.0] * 3,
                             box=[[0.1, 0.1, 0.5, 0.9]] * 2 + [[0.6, 0.1, 0.9, 0.9]], action=[1, 3, 2],
                             person=[0, 0, 1])
    props = ava_io.Proposals(video=["v"] * 4, timestamp=[902.0] * 4,
                             box=[[0.1, 0.1, 0.5, 0.88], [0.12, 0.1, 0.5, 0.7], [0.6, 0.1, 0.9, 0.9],
                                  [0.0, 0.0, 0.05, 0.05]], score=[0.95, 0.85, 0.5, 0.99])
    for iou_thr in (0.9, 0.5):
        rb = RowBuilder(label_ids=[1, 2, 3], annotations=ann, proposals=props, label_iou=iou_thr)
        r = rb.build("v")
        assert r.actor_counts.tolist() == [6]
        lab = r.arrays["actor_labels"]
        assert lab[:2].tolist() == [[1, 0, 1], [0, 1, 0]]
        gt_boxes = np.array([[0.1, 0.1, 0.5, 0.9], [0.6, 0.1, 0.9, 0.9]])
        gt_lab = lab[:2]
        for i, pb in enumerate(props.box):  # reference: loop over GT, best IoU
            ious = [box_iou(pb[None], g[None])[0, 0] for g in gt_boxes]
            want = gt_lab[int(np.argmax(ious))] if max(ious) >= iou_thr else np.zeros(3)
            assert lab[2 + i].tolist() == list(want)
    r = RowBuilder(label_ids=[1, 2, 3], annotations=ann, proposals=props, transfer_labels=False).build("v")
    assert r.arrays["actor_labels"][2:].sum() == 0
    r = RowBuilder(label_ids=[1, 2, 3], annotations=ann, proposals=props, min_proposal_score=0.9).build("v")
    assert r.arrays["actor_score"].tolist() == pytest.approx([1, 1, 0.95, 0.99])


def test_bad_video_past_end_keyframes_and_shards(ds, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    os.symlink(ds / "videos/syn_000.mp4", vids / "syn_000.mp4")
    (vids / "syn_001.mp4").write_bytes(b"\x00garbage" * 50)
    ann = ava_io.read_annotations(ds / "annotations/train.csv")
    extra = ava_io.Annotations(video=np.r_[ann.video, ["syn_000"]], timestamp=np.r_[ann.timestamp, [950.0]],
                               box=np.r_[ann.box, [[0.1, 0.1, 0.3, 0.3]]], action=np.r_[ann.action, [1]],
                               person=np.r_[ann.person, [7]])
    ava_io.write_annotations(tmp_path / "ann.csv", extra)
    out = tmp_path / "s.zarr"
    s = run_extract(_args(ds, out, videos=str(vids), annotations=str(tmp_path / "ann.csv"), objects="none",
                          objects_file=None))
    assert s["done"] == 1 and len(s["failed"]) == 1 and "syn_001.mp4" in s["failed"][0]["error"]
    assert s["keyframes_past_end"] == [{"video": "syn_000", "timestamps": [950.0]}]
    _, t = _load(out)
    assert t.video_names == ["syn_000"] and 950.0 not in t.kf_time.tolist()
    assert shard_videos(["c", "a", "b", "d", "e"], 1, 2) == ["b", "d"]
    s = run_extract(_args(ds, tmp_path / "sh.zarr", shard="1/2", objects="none", objects_file=None))
    assert s["done"] == 1 and open_store(str(tmp_path / "sh.zarr")).videos == ["syn_001"]


def test_video_with_every_keyframe_past_the_end_fails_alone(ds, tmp_path):
    ann = ava_io.read_annotations(ds / "annotations/train.csv")
    keep = ann.video != "syn_001"
    late = ava_io.Annotations(video=np.r_[ann.video[keep], ["syn_001"]], timestamp=np.r_[ann.timestamp[keep], [950.0]],
                              box=np.r_[ann.box[keep], [[0.1, 0.1, 0.3, 0.3]]], action=np.r_[ann.action[keep], [1]],
                              person=np.r_[ann.person[keep], [7]])
    ava_io.write_annotations(tmp_path / "ann.csv", late)
    out = tmp_path / "c.zarr"
    s = run_extract(_args(ds, out, annotations=str(tmp_path / "ann.csv"), proposals=None, objects="none",
                          objects_file=None, save=("context",), context_grid=2))
    # syn_001 loses its only keyframe: it fails alone (not committed, so a corrected rerun does it)
    assert s["done"] == 1 and [f["video"] for f in s["failed"]] == ["syn_001"]
    assert s["failed"][0]["error"].startswith("video syn_001: all 1 keyframe(s) (950 s) fall outside the video (0-5 s)")
    data, t = _load(out)
    assert t.video_names == ["syn_000"] and len(t.kf_time) > 0
    assert data["slowfast_r50/kf_context"].shape == (len(t.kf_time), data["slowfast_r50/actor_pooled"].shape[1], 2, 2)


def test_second_writer_of_a_shard_refused(ds, tmp_path):
    from stagecache.extract.store import StoreWriter

    out = tmp_path / "two.zarr"
    lm = ava_io.read_label_map(ds / "annotations/label_map.pbtxt")
    live = StoreWriter(str(out), split="train", label_ids=lm.ids, label_names=lm.names)  # rank 0 is busy
    with pytest.raises(StoreError, match="rank 0 is already being written by pid"):
        run_extract(_args(ds, out))
    assert run_extract(_args(ds, out, shard="1/2"))["done"] == 1  # another shard is free meanwhile
    live.close()
    assert run_extract(_args(ds, out, shard="0/2"))["done"] == 1
    assert open_store(str(out)).videos == ["syn_000", "syn_001"]


def test_args_validation(ds, tmp_path):
    with pytest.raises(ValueError, match="--random-init"):
        _args(ds, tmp_path / "x", random_init=False)
    with pytest.raises(ValueError, match="valid: roi, temporal, context"):
        _args(ds, tmp_path / "x", save="roi,bogus")
    with pytest.raises(ValueError, match="shard"):
        _args(ds, tmp_path / "x", shard="2/2")
    assert _args(ds, None).out == str(Path("cache/ava/train.zarr"))


def test_kill9_at_every_commit_point_resumes_to_identical_arrays(ds, full_run, tmp_path):
    """SIGKILL right after commit 1, 2, ... (the store's kill hook) until a run is not killed; each
    killed store, rerun, equals an uninterrupted run array for array and holds no leftovers. One
    commit unit per video (flush after every video): base and backbone manifests are 2 commits."""
    ref, _ = _load(full_run[0])
    ref = {k: x for k, x in ref.items() if k.startswith(("base/", "slowfast_r50/"))}
    for n in range(1, 10):
        out = tmp_path / f"k{n}.zarr"
        args = _args(ds, out, save=("roi", "temporal", "context"), context_grid=2, flush_mb=0)
        sig = wait_child(fork_call(lambda: run_extract(args), kill_after=n))
        if sig == 0:
            break
        assert sig == signal.SIGKILL, f"child ended with {sig}"
        st = open_store(str(out))  # readable; each video is whole in both groups or absent from both
        assert st.missing("slowfast_r50") == [] and len(st.videos) == n // 2
        s = run_extract(args)
        assert s["done"] + s["skipped"] == 2 and s["skipped"] == len(st.videos) and not s["failed"]
        got, _ = _load(out)
        assert sorted(got) == sorted(ref), n
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"kill after commit {n}: {k}")
        committed = {f[:-5] for f in os.listdir(out / "commits")}
        assert set(os.listdir(out / "fragments")) == committed, f"kill after commit {n}: leftovers"
    assert n == 5, "expected 2 commits (base + backbone) per video"


def test_resume_writes_the_group_a_video_lacks(ds, full_run, tmp_path):
    """A store of an older stagecache holding a video's features but not its boxes (issue 19): the
    rerun writes base only and the store equals an uninterrupted run."""
    import shutil

    ref, _ = _load(full_run[0])
    out = tmp_path / "p.zarr"
    run_extract(_args(ds, out, save=("roi", "temporal", "context"), context_grid=2, flush_mb=0))
    st = open_store(str(out))
    lost = next(f for f in st.fragments["base"] if "syn_001" in f.videos)
    (out / "commits" / f"{lost.id}.json").unlink()  # as if killed between the two group commits
    shutil.rmtree(out / "fragments" / lost.id)
    st = open_store(str(out))
    assert st.videos == ["syn_000"] and st.missing("slowfast_r50") == []
    s = run_extract(_args(ds, out, save=("roi", "temporal", "context"), context_grid=2))
    assert s["done"] == 1 and s["skipped"] == 1
    st = open_store(str(out))
    assert sum(len(f.videos) for f in st.fragments["slowfast_r50"]) == 2 and not st.duplicates
    got, _ = _load(out)
    for k in got:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_cli_features_exits_nonzero_on_failed_video(ds, tmp_path):
    from click.testing import CliRunner

    from stagecache.pipelines.commands.extract import extract_cli

    vids = tmp_path / "videos"
    vids.mkdir()
    os.symlink(ds / "videos/syn_000.mp4", vids / "syn_000.mp4")
    (vids / "syn_001.mp4").write_bytes(b"\x00garbage" * 50)
    base = ["features", "--split", "train", "--videos", str(vids), "--label-map",
            str(ds / "annotations/label_map.pbtxt"), "--annotations", str(ds / "annotations/train.csv"),
            "--out", str(tmp_path / "c.zarr"), "--device", "cpu", "--no-progress", "--time-offset", "900",
            "--backbone-args", json.dumps(TINY), "--sampling-args", json.dumps(SAMPLING)]
    r = CliRunner().invoke(extract_cli, base)
    assert r.exit_code != 0 and "--random-init" in r.output  # refuses without a checkpoint
    r = CliRunner().invoke(extract_cli, base + ["--random-init"])
    assert r.exit_code == 1, r.output
    assert open_store(str(tmp_path / "c.zarr")).videos == ["syn_000"]
    r = CliRunner().invoke(extract_cli, ["features", "--help"])
    assert "[default: slowfast_r50]" in " ".join(r.output.split())


def test_person_detector_on_keyframe_frames(ds, tmp_path, monkeypatch):
    from stagecache.extract import detectors

    seen = []

    class Fake:  # a detector with a fixed answer, recording the frames and keys it was given
        def __call__(self, frames, keys=None):
            seen.append((tuple(frames.shape), list(keys), float(frames.min()), float(frames.max())))
            return [detectors.Detections(torch.tensor([[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.7, 0.8]]),
                                         torch.tensor([0.95, 0.3]), torch.ones(2, dtype=torch.long))
                    for _ in range(frames.shape[0])]

    monkeypatch.setitem(detectors.PERSON_DETECTORS, "fake", lambda **kw: Fake())
    out = tmp_path / "d.zarr"
    s = run_extract(_args(ds, out, proposals=None, person_detector="fake", objects="none", objects_file=None,
                          min_proposal_score=0.5))
    assert s["done"] == 2 and not s["failed"]
    data, t = _load(out)
    assert sum(x[0][0] for x in seen) == len(t.kf_time) and all(x[2] >= 0 and x[3] <= 1 for x in seen)
    assert seen[0][1][0] == ("syn_000", 902.0)
    det = ~data["base/actor_is_gt"]
    # one detection per keyframe survives the 0.5 score cut, after the GT rows
    assert det.sum() == len(t.kf_time)
    np.testing.assert_allclose(data["base/actor_box"][det], [[0.1, 0.1, 0.4, 0.9]] * len(t.kf_time))
    assert data["slowfast_r50/actor_pooled"].shape[0] == len(data["base/actor_box"])
