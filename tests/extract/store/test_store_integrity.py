"""A store that knows when it is damaged (issue 31): manifests record every file with its size and
checksum; readers check sizes, zarr.json against the manifest and the schema's values; `cache
verify` checks the sums and `--repair` (or `compact`) drops a damaged fragment's commit unit so a
resumed writer redoes exactly those videos; a full disk is one line and the store stays intact."""
from __future__ import annotations

import errno
import json
import os
import shutil
import zlib

import numpy as np
import pytest

from stagecache.core.atomic import DiskFullError
from stagecache.extract.store import StoreError, StoreWriter, compact, open_store
from stagecache.pipelines.tools.cache import verify_store
from tests.extract.store.helpers import LABEL_IDS, LABEL_NAMES, VIDEOS, assert_tables_equal, make_video, write_videos


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("integrity") / "ref")
    write_videos(p, VIDEOS, flush_bytes=1, units=True)  # one unit (base + sf) per video
    return p, open_store(p).load()


def _copy(ref, tmp_path) -> str:
    p = str(tmp_path / "s")
    shutil.copytree(ref[0], p)
    return p


def _frag(p: str, group: str, video: str) -> dict:
    st = open_store(p)
    return next(f.man for f in st.fragments[group] if video in f.videos)


def _video_with_actors() -> str:
    return next(v for v in VIDEOS if make_video(v)[1].sum() > 0)


def _load_error(p: str) -> str:
    with pytest.raises(StoreError) as e:
        open_store(p).load()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_manifest_records_every_file_with_size_and_checksum(ref):
    p = ref[0]
    for f in [f for fs in open_store(p).fragments.values() for f in fs]:
        files = f.man["files"]
        on_disk = {os.path.relpath(os.path.join(d, n), os.path.join(p, "fragments", f.id)).replace(os.sep, "/")
                   for d, _, ns in os.walk(os.path.join(p, "fragments", f.id)) for n in ns}
        assert set(files) == on_disk  # every chunk (zeros included) and every zarr.json
        for rel, (size, crc) in files.items():
            data = open(os.path.join(p, "fragments", f.id, rel), "rb").read()
            assert [len(data), zlib.crc32(data)] == [size, crc], rel  # an independent reading of the file


def test_deleted_chunk_refused_reported_and_repaired_to_the_identical_store(ref, tmp_path):
    p = _copy(ref, tmp_path)
    v = _video_with_actors()
    man = _frag(p, "sf", v)
    os.remove(os.path.join(p, "fragments", man["fragment"], "actor_pooled", "c", "0", "0"))
    msg = _load_error(p)  # zarr's fill value would have read zeros
    assert all(s in msg for s in (p, "'sf'", "'actor_pooled'", man["fragment"], "missing")), msg
    st = open_store(p)
    k = int(np.nonzero(np.asarray(st._kf_video) == st.videos.index(v))[0][0])
    with pytest.raises(StoreError, match=man["fragment"]):
        st.keyframe(k, {"sf": ["actor_pooled"]})
    probs = verify_store(p, progress=False)
    assert any(man["fragment"] in x and "actor_pooled/c/0/0 is missing" in x for x in probs), probs
    notes = []
    verify_store(p, repair=True, progress=False, log=notes.append)
    assert any("dropped" in n and man["fragment"] in n for n in notes), notes
    st = open_store(p)
    assert st.missing("base") == [] or v not in st.videos  # the whole unit went: base too
    assert v not in st.videos and st.missing("sf") == []
    write_videos(p, VIDEOS, flush_bytes=1, units=True)  # the resumed writer redoes just that video
    assert_tables_equal(open_store(p).load(), ref[1])
    assert verify_store(p, progress=False) == []


def test_shortened_shape_truncated_chunk_and_edited_dtype_are_one_line_each(ref, tmp_path):
    v = _video_with_actors()
    for case in ("shape", "truncate", "dtype", "array_json"):
        p = str(tmp_path / case)
        shutil.copytree(ref[0], p)
        man = _frag(p, "sf", v)
        d = os.path.join(p, "fragments", man["fragment"], "actor_pooled")
        meta = json.load(open(os.path.join(d, "zarr.json")))
        if case == "shape":
            meta["shape"][0] -= 1
        elif case == "dtype":
            meta["data_type"] = "float32"  # same length as "float16": only the manifest tells
        if case == "truncate":
            with open(os.path.join(d, "c", "0", "0"), "r+b") as f:
                f.truncate(3)
        elif case == "array_json":
            open(os.path.join(d, "zarr.json"), "w").write("{not json")
        else:
            json.dump(meta, open(os.path.join(d, "zarr.json"), "w"))
        msg = _load_error(p)
        assert man["fragment"] in msg and "actor_pooled" in msg, (case, msg)
        assert any(man["fragment"] in x for x in verify_store(p, progress=False)), case


def test_changed_bytes_found_by_the_checksum_and_dropped_by_compact(ref, tmp_path):
    p = _copy(ref, tmp_path)
    man = _frag(p, "sf", _video_with_actors())
    chunk = os.path.join(p, "fragments", man["fragment"], "actor_pooled", "c", "0", "0")
    data = bytearray(open(chunk, "rb").read())
    data[0] ^= 0xFF
    open(chunk, "wb").write(bytes(data))
    probs = verify_store(p, progress=False)
    assert any("does not match its checksum" in x and man["fragment"] in x for x in probs), probs
    # Sizes alone (what compaction checks) do not see it; a missing file it does drop.
    os.remove(chunk)
    rep = compact(p, log=lambda *_: None)
    assert rep["removed_damaged"] == len(man["unit"])
    assert not os.path.exists(os.path.join(p, "commits", man["fragment"] + ".json"))
    write_videos(p, VIDEOS, flush_bytes=1, units=True)
    assert_tables_equal(open_store(p).load(), ref[1])


@pytest.mark.parametrize("what", ["root", "meta", "manifest", "manifest_counts"])
def test_damaged_json_is_one_line_naming_store_and_file(ref, tmp_path, what):
    p = _copy(ref, tmp_path)
    if what == "root":
        sub = "zarr.json"
    elif what == "meta":
        sub = "meta/sf.json"
    else:
        sub = f"commits/{_frag(p, 'sf', _video_with_actors())['fragment']}.json"
    path = os.path.join(p, *sub.split("/"))
    if what == "manifest_counts":  # valid JSON whose counts no longer match the array shapes
        m = json.load(open(path))
        m["actor_counts"][0] += 1
        json.dump(m, open(path, "w"))
        sub = sub.split("/")[1][:-5]
    else:
        open(path, "w").write('{"trunc')
    with pytest.raises(StoreError) as e:
        open_store(p)
    assert p in str(e.value) and sub in str(e.value), str(e.value)


def test_values_the_schema_forbids_are_refused_where_read(tmp_path):
    """Boxes outside [0,1] or with x1 > x2, and duplicate label ids, stop a reader (train-head,
    predict, write-bank and extract tracks all read through FeatureStore); verify lists them."""
    p = str(tmp_path / "box")
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, object_classes=["c"])
    w.declare_group("base", {})
    ts, ac, oc, base, _ = make_video(_video_with_actors())
    base["actor_box"] = base["actor_box"].copy()
    base["actor_box"][-1] = [0.2, 0.2, 1.5, 0.9]
    w.add_video("base", "v", timestamps=ts, actor_counts=ac, object_counts=oc, arrays=base)
    w.close()
    msg = _load_error(p)
    assert "actor_box" in msg and "'v'" in msg and "1.5" in msg, msg
    assert any("base/actor_box" in x for x in verify_store(p, progress=False))
    with pytest.raises(StoreError, match="actor_box"):
        open_store(p).keyframe(len(ts) - 1)
    assert open_store(p).load({"base": ["actor_score"]}).data["base/actor_score"].shape[0] == ac.sum()
    root = json.load(open(os.path.join(p, "zarr.json")))
    root["attributes"]["stagecache"]["label_ids"][1] = root["attributes"]["stagecache"]["label_ids"][0]
    json.dump(root, open(os.path.join(p, "zarr.json"), "w"))
    with pytest.raises(StoreError, match="label_ids must be unique"):
        open_store(p)


def test_labels_other_than_0_1_on_disk_are_refused(ref, tmp_path):
    p = _copy(ref, tmp_path)
    man = _frag(p, "base", _video_with_actors())
    chunk = os.path.join(p, "fragments", man["fragment"], "actor_labels", "c", "0", "0")
    data = bytearray(open(chunk, "rb").read())
    data[0] = 2
    open(chunk, "wb").write(bytes(data))
    assert "actor_labels holds values other than 0/1" in _load_error(p)


def test_manifest_without_checksums_reads_as_before(ref, tmp_path):
    """An older writer's manifest (no `files`) stays readable; verify says what it cannot check."""
    p = _copy(ref, tmp_path)
    for n in os.listdir(os.path.join(p, "commits")):
        m = json.load(open(os.path.join(p, "commits", n)))
        del m["files"], m["checksum"]
        json.dump(m, open(os.path.join(p, "commits", n), "w"))
    assert_tables_equal(open_store(p).load(), ref[1])
    notes = []
    assert verify_store(p, progress=False, log=notes.append) == []
    assert any("no checksums recorded" in n for n in notes), notes


def test_full_disk_is_one_line_and_the_store_stays_intact(ref, tmp_path, monkeypatch):
    """ENOSPC from the store's own write path (the fragment's arrays): DiskFullError naming the
    fragment, nothing committed, the partial fragment removed; the next run completes the store."""
    import stagecache.extract.store.io as sio

    p = str(tmp_path / "full")
    write_videos(p, VIDEOS[:3], flush_bytes=1, units=True)
    before = open_store(p).load()
    real = sio._write_arrays

    def full(loc, sub, fid, arrays, hook):
        real(loc, sub, fid, dict(list(arrays.items())[:1]), hook)  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio, "_write_arrays", full)
    with pytest.raises(DiskFullError) as e:
        with StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES,
                         object_classes=[f"c{i}" for i in range(10)], flush_bytes=1) as w:  # as extraction does
            w.declare_group("base", {"backbone": "base", "command_line": "rank 0"})
            ts, ac, oc, base, _ = make_video(VIDEOS[5])
            w.add_groups(VIDEOS[5], timestamps=ts, actor_counts=ac, object_counts=oc, groups={"base": base})
    msg = str(e.value)
    assert "\n" not in msg and "no space left on the device writing" in msg and "/fragments/" in msg, msg
    assert "free" in msg and "needed" in msg
    assert_tables_equal(open_store(p).load(), before)
    committed = {n[:-5] for n in os.listdir(os.path.join(p, "commits")) if n.endswith(".json")}
    assert set(os.listdir(os.path.join(p, "fragments"))) <= committed  # the partial fragment went
    monkeypatch.setattr(sio, "_write_arrays", real)
    write_videos(p, VIDEOS, flush_bytes=1, units=True)
    assert_tables_equal(open_store(p).load(), ref[1])


def test_repair_removes_an_unreadable_manifest_and_the_rerun_redoes_its_videos(ref, tmp_path):
    p = _copy(ref, tmp_path)
    man = _frag(p, "sf", _video_with_actors())
    open(os.path.join(p, "commits", man["fragment"] + ".json"), "w").write('{"trunc')
    assert any(f"commits/{man['fragment']}.json" in x for x in verify_store(p, progress=False))
    verify_store(p, repair=True, progress=False)
    open_store(p)  # readable again: the unit's other fragment is invisible with it
    write_videos(p, VIDEOS, flush_bytes=1, units=True)
    assert_tables_equal(open_store(p).load(), ref[1])
    assert verify_store(p, progress=False) == []


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_repair_cut_short_at_any_step_leaves_a_consistent_store(ref, tmp_path, steps):
    """drop_unit removes manifests first, data last: the state after each of its first steps (what a
    kill leaves) reads without the unit's videos in any group, and the next writer completes it."""
    p = _copy(ref, tmp_path)
    v = _video_with_actors()
    man = _frag(p, "sf", v)
    members = [man["fragment"]] + sorted(u for u in man["unit"] if u != man["fragment"])
    ops = [f"commits/{u}.json" for u in members] + [f"fragments/{u}" for u in members]
    for sub in ops[:steps]:
        path = os.path.join(p, *sub.split("/"))
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    st = open_store(p)
    assert v not in st.videos and all(v not in st._src.get(g, {}) for g in ("base", "sf"))
    st.load()
    write_videos(p, VIDEOS, flush_bytes=1, units=True)
    assert_tables_equal(open_store(p).load(), ref[1])
