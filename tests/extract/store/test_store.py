"""Feature store: round trips, concurrency, kill -9 resume, versions, URLs, lazy access."""
from __future__ import annotations

import hashlib
import json
import os
import signal

import numpy as np
import pytest
import torch

from stagecache.extract.store import (SCHEMA_VERSION, StoreError, StoreWriter, estimate_bytes, open_store,
                           write_group)
from tests.extract.store.helpers import (LABEL_IDS, LABEL_NAMES, VIDEOS, assert_tables_equal, make_video, run_writer,
                                        write_videos)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The reference: one uninterrupted in-process run."""
    p = tmp_path_factory.mktemp("clean") / "store"
    write_videos(str(p), VIDEOS, flush_bytes=3000)
    return str(p), open_store(str(p)).load()


def test_round_trip_all_array_kinds(clean):
    _, t = clean
    # Reference built directly: keyframes ordered by video name, dtypes per the schema.
    exp = {k: [] for k in ("ts", "ac", "oc")}
    arrs: dict[str, list] = {}
    for v in sorted(VIDEOS):
        ts, ac, oc, base, feat = make_video(v)
        exp["ts"].append(ts), exp["ac"].append(ac), exp["oc"].append(oc)
        for g, d in (("base", base), ("sf", feat)):
            for n, a in d.items():
                arrs.setdefault(f"{g}/{n}", []).append(a)
    assert t.video_names == sorted(VIDEOS)
    assert torch.equal(t.kf_time, torch.from_numpy(np.concatenate(exp["ts"])))
    ac = np.concatenate(exp["ac"])
    assert torch.equal(t.kf_actor_offset, torch.from_numpy(np.concatenate(([0], np.cumsum(ac)))))
    assert torch.equal(t.actor_kf, torch.from_numpy(np.repeat(np.arange(len(ac)), ac)))
    dtypes = {"actor_box": torch.float32, "actor_score": torch.float32, "actor_is_gt": torch.bool,
              "actor_labels": torch.uint8, "actor_track": torch.int64, "object_class": torch.int64,
              "object_feature": torch.float16, "actor_pooled": torch.float16, "actor_roi": torch.float16,
              "actor_temporal": torch.float16, "kf_context": torch.float16}
    assert sorted(t.data) == sorted(arrs)
    for k, parts in arrs.items():
        want = np.concatenate(parts)
        got = t.data[k]
        assert got.dtype == dtypes.get(k.split("/")[1], torch.float32), k
        np.testing.assert_array_equal(got.numpy(), want.astype(got.numpy().dtype), err_msg=k)
    st = open_store(clean[0])
    assert st.attrs["schema_version"] == SCHEMA_VERSION and st.attrs["label_ids"] == LABEL_IDS
    assert st.attrs["object_classes"][3] == "c3"
    assert st.groups["sf"]["backbone"] == "sf" and "project_version" in st.groups["sf"]
    assert st.array_info("sf")["actor_roi"] == ((st.num_actors, 3, 2, 2), "float16")


def test_lazy_keyframe_equals_load(clean):
    path, t = clean
    st = open_store(path)
    for i in range(st.num_keyframes):
        kf = st.keyframe(i)
        assert kf["video"] == t.video_names[int(t.kf_video[i])] and kf["timestamp"] == float(t.kf_time[i])
        a0, a1 = int(t.kf_actor_offset[i]), int(t.kf_actor_offset[i + 1])
        o0, o1 = int(t.kf_object_offset[i]), int(t.kf_object_offset[i + 1])
        for k, full in t.data.items():
            ax = k.split("/")[1].split("_")[0]
            want = full[a0:a1] if ax == "actor" else full[o0:o1] if ax == "object" else full[i]
            np.testing.assert_array_equal(kf[k], want.numpy(), err_msg=f"{k} kf {i}")
    sub = st.keyframe(0, select={"sf": ["kf_context"]})
    assert [k for k in sub if "/" in k] == ["sf/kf_context"]


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_urls(clean, tmp_path, scheme):
    url = "memory://stagecache_test/store" if scheme == "memory" else f"file://{tmp_path}/store"
    write_videos(url, VIDEOS, flush_bytes=3000)
    assert_tables_equal(open_store(url).load(), clean[1])


def _tree_digest(root, sub):
    h = {}
    for d, _, names in os.walk(os.path.join(root, sub)):
        for n in names:
            p = os.path.join(d, n)
            h[os.path.relpath(p, root)] = hashlib.md5(open(p, "rb").read()).hexdigest()
    return h


def test_second_backbone_added_later_leaves_base_untouched(tmp_path):
    p = str(tmp_path / "s")
    write_videos(p, VIDEOS[:4], groups=("base",), flush_bytes=10**6)
    frags_before = {k: v for k, v in _tree_digest(p, "fragments").items()}
    commits_before = _tree_digest(p, "commits")
    assert open_store(p).missing("base") == []
    write_videos(p, VIDEOS[:4], groups=("base", "sf"), flush_bytes=10**6)  # base is done: only sf written
    after = _tree_digest(p, "fragments")
    assert {k: after[k] for k in frags_before} == frags_before
    assert {k: v for k, v in _tree_digest(p, "commits").items() if k in commits_before} == commits_before
    st = open_store(p)
    assert sorted(st.groups) == ["base", "sf"] and st.missing("sf") == []
    t = st.load({"sf": ["actor_pooled"]})
    assert list(t.data) == ["sf/actor_pooled"] and t.data["sf/actor_pooled"].shape[0] == st.num_actors


def test_attrs_mismatch_refused(tmp_path):
    p = str(tmp_path / "s")
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
    w.declare_group("sf", {"backbone": "slowfast_r50", "ckpt": "abc", "command_line": "x"})
    w2 = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, rank=1)
    w2.declare_group("sf", {"backbone": "slowfast_r50", "ckpt": "abc", "command_line": "y"})  # volatile key
    with pytest.raises(StoreError, match="ckpt"):
        w2.declare_group("sf", {"backbone": "slowfast_r50", "ckpt": "def"})
    w2.declare_group("sf", {"backbone": "slowfast_r50", "ckpt": "def"}, allow_mismatch=True)
    with pytest.raises(StoreError, match="split"):
        StoreWriter(p, split="train", label_ids=LABEL_IDS, label_names=LABEL_NAMES)


def test_schema_version_refused(tmp_path):
    p = tmp_path / "s"
    write_videos(str(p), VIDEOS[:1], groups=("base",))
    meta = json.loads((p / "zarr.json").read_text())
    meta["attributes"]["stagecache"]["schema_version"] = SCHEMA_VERSION + 1
    (p / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=f"schema_version is {SCHEMA_VERSION + 1}.*reads schema version {SCHEMA_VERSION}"):
        open_store(str(p))
    with pytest.raises(StoreError, match="schema_version"):
        StoreWriter(str(p), split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
    with pytest.raises(StoreError, match="no feature store"):
        open_store(str(tmp_path / "nothing"))


def test_incomplete_group_and_bad_input(tmp_path):
    p = str(tmp_path / "s")
    write_videos(p, VIDEOS[:3], groups=("base",))
    write_videos(p, VIDEOS[:2], groups=("sf",))
    st = open_store(p)
    assert st.missing("sf") == [VIDEOS[2]]
    with pytest.raises(StoreError, match=VIDEOS[2]):
        st.load({"sf": None})
    st.load({"base": None})  # base alone is fine
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
    w.declare_group("sf", {"backbone": "sf"})
    with pytest.raises(ValueError, match="vidX.*expected 3 rows"):
        w.add_video("sf", "vidX", timestamps=[1.0, 2.0], actor_counts=[1, 2], object_counts=[0, 0],
                    arrays={"actor_pooled": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="strictly increasing"):
        w.add_video("sf", "vidX", timestamps=[2.0, 1.0], actor_counts=[1, 2], object_counts=[0, 0],
                    arrays={"actor_pooled": np.zeros((3, 4))})
    with pytest.raises(StoreError, match="declare_group"):
        w.add_video("nope", "vidX", timestamps=[1.0], actor_counts=[0], object_counts=[0], arrays={})


def test_concurrent_ranks_equal_single_process(clean, tmp_path):
    p = str(tmp_path / "s")
    procs = [run_writer(p, VIDEOS[r::3], rank=r, flush_bytes=2000) for r in range(3)]
    for pr in procs:
        out, _ = pr.communicate(timeout=60)
        assert pr.returncode == 0
    assert_tables_equal(open_store(p).load(), clean[1])


def test_kill9_resume_bit_identical(clean, tmp_path):
    p = str(tmp_path / "s")
    pr = run_writer(p, VIDEOS, flush_bytes=1, stall_after=5)
    line = pr.stdout.readline()
    assert line.strip() == "MID", line
    os.kill(pr.pid, signal.SIGKILL)
    pr.wait(timeout=30)
    # Committed so far: base+sf of 2 videos and base of a third; a half-written fragment lies on disk.
    st = open_store(p)
    assert 0 < len(st.videos) < len(VIDEOS)
    frag_dirs = set(os.listdir(os.path.join(p, "fragments")))
    committed = {n[:-5] for n in os.listdir(os.path.join(p, "commits"))}
    assert frag_dirs - committed, "expected an uncommitted fragment directory"
    with pytest.raises(StoreError):
        st.load()  # sf lags behind base: reported, not silently truncated
    pr = run_writer(p, VIDEOS, flush_bytes=1)
    pr.communicate(timeout=60)
    assert pr.returncode == 0
    assert_tables_equal(open_store(p).load(), clean[1])
    frag_dirs = set(os.listdir(os.path.join(p, "fragments")))
    assert frag_dirs == {n[:-5] for n in os.listdir(os.path.join(p, "commits"))}  # leftovers cleaned


def test_duplicate_video_deterministic(tmp_path):
    p = str(tmp_path / "s")
    write_videos(p, VIDEOS[:2], groups=("base",), rank=0)
    write_videos(p, VIDEOS[:1], groups=("base",), rank=1)  # rank 1 skips it via done()
    assert len(os.listdir(os.path.join(p, "commits"))) == 2
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, rank=2)
    w.declare_group("base", {"backbone": "base"})
    ts, ac, oc, base, _ = make_video(VIDEOS[1])
    w.add_video("base", VIDEOS[1], timestamps=ts, actor_counts=ac, object_counts=oc,
                arrays={**base, "actor_score": np.zeros(int(ac.sum()))})
    w.close()
    with pytest.warns(UserWarning, match="twice"):
        t = open_store(p).load()
    st_ref = make_video(VIDEOS[1])[3]["actor_score"].astype(np.float32)
    np.testing.assert_array_equal(t.data["base/actor_score"][-len(st_ref):].numpy(), st_ref)  # first copy wins


def test_write_group_replaces_atomically(clean, tmp_path):
    p = str(tmp_path / "s")
    write_videos(p, VIDEOS[:4], groups=("base",))
    st = open_store(p)
    write_group(p, "tracks", {"tracker": "iou", "thr": 0.3}, {"actor_track": np.arange(st.num_actors)})
    write_group(p, "tracks", {"tracker": "iou", "thr": 0.5}, {"actor_track": np.arange(st.num_actors) * 2})
    st = open_store(p)
    assert st.groups["tracks"]["thr"] == 0.5 and len(st.fragments["tracks"]) == 1
    assert torch.equal(st.load({"tracks": None}).data["tracks/actor_track"], torch.arange(st.num_actors) * 2)
    with pytest.raises(ValueError, match="actor rows"):
        write_group(p, "tracks", {}, {"actor_track": np.arange(st.num_actors + 1)})


def test_estimate_bytes_close_to_actual(tmp_path):
    p = str(tmp_path / "s")
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, flush_bytes=1 << 30)
    w.declare_group("sf", {})
    rng = np.random.default_rng(0)
    for v in range(20):
        w.add_video("sf", f"v{v}", timestamps=np.arange(10.0), actor_counts=[4] * 10, object_counts=[0] * 10,
                    arrays={"actor_pooled": rng.standard_normal((40, 256))})
    w.close()
    actual = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(os.path.join(p, "fragments")) for n in ns)
    est = estimate_bytes(200, 4, 0, pooled_dim=256, include_base=False)
    assert 0.9 < actual / est < 1.2, (actual, est)
    assert estimate_bytes(200, 4, 0, pooled_dim=256, roi_shape=(256, 7, 7)) > 49 * est


def test_multi_chunk_raw_fast_path_matches_zarr(clean, tmp_path, monkeypatch):
    """Features split over several raw chunks (an all-zero one included: written too) read the
    same through the direct-file path (local) and through zarr itself (memory://)."""
    import stagecache.extract.store.io as sio

    monkeypatch.setattr(sio, "CHUNK_MAX_BYTES", 96)  # 3 rows of 16 float16 per chunk file
    p, url = str(tmp_path / "s"), "memory://stagecache_test/multichunk"
    for target in (p, url):
        w = StoreWriter(target, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, flush_bytes=1 << 30)
        w.declare_group("sf", {})
        x = np.arange(20 * 16, dtype=np.float32).reshape(20, 16)
        x[3:6] = 0  # a whole chunk of fill value: written all the same (a missing chunk is damage)
        w.add_video("sf", "v", timestamps=[1.0, 2.0], actor_counts=[9, 11], object_counts=[0, 0],
                    arrays={"actor_pooled": x})
        w.close()
    frag = os.path.join(p, "fragments", os.listdir(os.path.join(p, "fragments"))[0], "actor_pooled", "c")
    assert len(os.listdir(frag)) == 7
    a, b = open_store(p), open_store(url)
    np.testing.assert_array_equal(a.load().data["sf/actor_pooled"].numpy(), x.astype(np.float16))
    np.testing.assert_array_equal(b.load().data["sf/actor_pooled"].numpy(), x.astype(np.float16))
    np.testing.assert_array_equal(a.keyframe(1)["sf/actor_pooled"], x[9:].astype(np.float16))
