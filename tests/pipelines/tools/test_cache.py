"""cache info / verify / export / import / compact."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from stagecache.extract.store import Location, StoreWriter, open_store
from stagecache.extract.store import compact as compact_store
from stagecache.pipelines.tools.cache import export_h5, import_h5, store_info, verify_store
from stagecache.pipelines.commands.cache import cache_cli
from tests.extract.store.helpers import LABEL_IDS, LABEL_NAMES, VIDEOS, assert_tables_equal, make_video, write_videos


@pytest.fixture
def store(tmp_path):
    p = str(tmp_path / "store")
    write_videos(p, VIDEOS[:5], flush_bytes=1)  # one fragment per video and group
    return p


def write_pbtxt(path, ids, names):
    path.write_text("".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in zip(ids, names)))
    return str(path)


def test_info_counts_and_bytes(store):
    info = store_info(store)
    st = open_store(store)
    assert (info["videos"], info["keyframes"], info["actors"]) == (5, st.num_keyframes, st.num_actors)
    sf = info["groups"]["sf"]
    assert sf["fragments"] == 5 and sf["missing"] == 0
    assert sf["arrays"]["actor_pooled"]["shape"] == [st.num_actors, 16]
    # Raw float16 (no compression): bytes on disk are at least the payload.
    assert sf["arrays"]["actor_pooled"]["bytes"] >= st.num_actors * 16 * 2
    r = CliRunner().invoke(cache_cli, ["info", store])
    assert r.exit_code == 0 and "actor_pooled" in r.output and "float16" in r.output


def test_verify_clean_and_label_map(store, tmp_path):
    assert verify_store(store) == []
    good = write_pbtxt(tmp_path / "good.pbtxt", LABEL_IDS, LABEL_NAMES)
    bad = write_pbtxt(tmp_path / "bad.pbtxt", [1, 2, 3], ["a", "b", "c"])
    assert verify_store(store, label_map=good) == []
    assert any("label ids" in p for p in verify_store(store, label_map=bad))
    r = CliRunner().invoke(cache_cli, ["verify", store])
    assert r.exit_code == 0, r.output


def _writer(p):
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, rank=5)
    w.declare_group("base", {"backbone": "base"})
    w.declare_group("sf", {"backbone": "sf"})
    return w


def _add(w, v, base_fn=None, feat_fn=None):
    ts, ac, oc, base, feat = make_video(v)
    for g, arrs, fn in (("base", base, base_fn), ("sf", feat, feat_fn)):
        if fn is not None:
            arrs = fn(dict(arrs))
        if arrs is not None:
            w.add_video(g, v, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=arrs)


def test_verify_catches_nan_bad_box_missing(tmp_path):
    p = str(tmp_path / "s")
    w = _writer(p)

    def nan(a):
        a["actor_pooled"] = a["actor_pooled"].copy()
        a["actor_pooled"][0, 3] = np.nan
        return a

    def badbox(a):
        a["actor_box"] = a["actor_box"].copy()
        a["actor_box"][0] = [0.6, 0.1, 0.2, 0.5]  # x1 > x2
        return a
    # Names whose synthetic content has actors (so a NaN / bad box can be planted).
    ok, v_nan, v_box, v_missing = [v for v in (f"v{i:02d}" for i in range(40)) if make_video(v)[1].sum() > 0][:4]
    _add(w, ok)
    _add(w, v_nan, feat_fn=nan)
    _add(w, v_box, base_fn=badbox)
    _add(w, v_missing, feat_fn=lambda a: None)
    w.close()
    probs = verify_store(p)
    assert any("sf: 1 of 4 videos missing" in x and v_missing in x for x in probs), probs
    # Complete the missing video: NaN and box are then reported by name.
    w = _writer(p)
    ts, ac, oc, _, feat = make_video(v_missing)
    w.add_video("sf", v_missing, timestamps=ts, actor_counts=ac, object_counts=oc, arrays=feat)
    w.close()
    probs = verify_store(p)
    assert any("sf/actor_pooled" in x and "NaN" in x and v_nan in x for x in probs), probs
    assert any("base/actor_box" in x and v_box in x for x in probs), probs
    assert len(probs) == 2
    r = CliRunner().invoke(cache_cli, ["verify", p])
    assert r.exit_code == 1 and v_nan in r.output


def test_verify_empty_groups_duplicates_and_lost_data(tmp_path):
    """Groups declared with nothing committed (every video failed / killed before the first
    commit), a video stored twice (two writers of one shard in an older stagecache), and a manifest
    whose data is gone: each is one named problem, never a traceback."""
    import shutil

    p = str(tmp_path / "empty")
    _writer(p).close()
    assert verify_store(p) == ["no video committed in any group (declared: ['base', 'sf']): every video failed, "
                               "or the writer was killed before its first commit"]
    r = CliRunner().invoke(cache_cli, ["verify", p])
    assert r.exit_code == 1 and "Traceback" not in r.output
    p = str(tmp_path / "dup")
    write_videos(p, VIDEOS[:2])
    w = _writer(p)  # another writer that ignored done(): VIDEOS[1] again in both groups
    _add(w, VIDEOS[1])
    w.close()
    probs = verify_store(p)
    assert [x for x in probs if "stored more than once" in x] == [
        f"group base: 1 video(s) stored more than once (first: {[VIDEOS[1]]}), e.g. by two writers of one shard; "
        f"readers use the first copy, `cache compact` drops the others",
        f"group sf: 1 video(s) stored more than once (first: {[VIDEOS[1]]}), e.g. by two writers of one shard; "
        f"readers use the first copy, `cache compact` drops the others"], probs
    compact_store(p, log=lambda *_: None)
    assert verify_store(p) == []
    st = open_store(p)
    frag = st.fragments["sf"][0].id
    shutil.rmtree(os.path.join(p, "fragments", frag))
    probs = verify_store(p)
    assert probs[0].startswith(f"commits/{frag}.json: committed but its data fragments/{frag} is missing"), probs


def test_export_import_stagecache_round_trip(store, tmp_path):
    h5 = str(tmp_path / "x.h5")
    export_h5(store, h5)
    out = str(tmp_path / "back")
    assert import_h5(h5, out) == "stagecache"
    a, b = open_store(store), open_store(out)
    assert_tables_equal(a.load(), b.load())
    assert a.attrs["label_names"] == b.attrs["label_names"] and b.groups["sf"]["backbone"] == "sf"
    r = CliRunner().invoke(cache_cli, ["export", store, str(tmp_path / "y.h5")])
    assert r.exit_code == 0, r.output


def test_stage_h5_layout_import_export(tmp_path):
    rng = np.random.default_rng(1)
    src = str(tmp_path / "val.h5")
    content = {}
    with h5py.File(src, "w") as f:
        for key in ["-5KQ66BBWC4_0902", "-5KQ66BBWC4_0903", "abc_def_1000", "-5KQ66BBWC4_0905"]:
            n = int(rng.integers(1, 4))
            xy = rng.random((n, 2)) * 0.5
            d = dict(boxes=np.concatenate([xy, xy + 0.3], 1).astype(np.float32),
                     features=rng.standard_normal((n, 8)).astype(np.float32),
                     labels=(rng.random((n, 4)) < 0.4).astype(np.float32))
            g = f.create_group(key)
            for k, v in d.items():
                g.create_dataset(k, data=v)
            content[key] = d
    pb = write_pbtxt(tmp_path / "lm.pbtxt", LABEL_IDS, LABEL_NAMES)
    out = str(tmp_path / "store")
    r = CliRunner().invoke(cache_cli, ["import", src, out, "--label-map", pb, "--label-columns", "label-map"])
    assert r.exit_code == 0, r.output
    st = open_store(out)
    assert st.attrs["split"] == "val" and st.attrs["label_ids"] == LABEL_IDS
    assert st.videos == ["-5KQ66BBWC4", "abc_def"]
    t = st.load()
    assert t.kf_time.tolist() == [902.0, 903.0, 905.0, 1000.0]
    order = ["-5KQ66BBWC4_0902", "-5KQ66BBWC4_0903", "-5KQ66BBWC4_0905", "abc_def_1000"]
    np.testing.assert_array_equal(t.data["base/actor_box"].numpy(), np.concatenate([content[k]["boxes"] for k in order]))
    np.testing.assert_array_equal(t.data["stage_slowfast/actor_pooled"].numpy(),
                                  np.concatenate([content[k]["features"] for k in order]).astype(np.float16))
    np.testing.assert_array_equal(t.data["base/actor_labels"].numpy(), np.concatenate([content[k]["labels"] for k in order]))
    assert verify_store(out) == []
    back = str(tmp_path / "back.h5")
    export_h5(out, back, layout="stage")
    with h5py.File(back, "r") as f:
        assert sorted(f) == sorted(content)
        for k, d in content.items():
            np.testing.assert_array_equal(f[k]["boxes"][()], d["boxes"])
            np.testing.assert_array_equal(f[k]["labels"][()][:, LABEL_IDS], d["labels"])  # column c = id c
            np.testing.assert_array_equal(f[k]["features"][()], d["features"].astype(np.float16).astype(np.float32))
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as f:
        f.create_group("vid_0902").create_dataset("boxes", data=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="vid_0902.*lacks"):
        import_h5(bad, str(tmp_path / "s2"))


def test_compact_merges_and_survives_kill(store, monkeypatch):
    before = open_store(store).load()
    # A stale uncommitted fragment left by a dead writer.
    loc = Location(store)
    os.makedirs(os.path.join(store, "fragments", "sf-r9-dead"))
    # Simulate a kill right after the first merged commit: deletion of old fragments fails.
    real_remove = Location.remove

    def boom(self, sub):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(Location, "remove", boom)
    with pytest.raises(KeyboardInterrupt):
        compact_store(store, stale_seconds=0, log=lambda *_: None)
    monkeypatch.setattr(Location, "remove", real_remove)
    mid = open_store(store)
    assert len(mid.fragments["base"]) == 1 and len(mid.fragments["sf"]) == 5  # base merged, sf not yet
    assert_tables_equal(mid.load(), before)
    rep = compact_store(store, stale_seconds=0, log=lambda *_: None)
    assert rep["removed_superseded"] == 5 and rep["removed_stale"] == 1
    after = open_store(store)
    assert {g: len(f) for g, f in after.fragments.items()} == {"base": 1, "sf": 1}
    assert_tables_equal(after.load(), before)
    assert sorted(loc.listdir("fragments")) == sorted(f.id for fs in after.fragments.values() for f in fs)
    r = CliRunner().invoke(cache_cli, ["compact", store])
    assert r.exit_code == 0 and '"merged": 0' in r.output
