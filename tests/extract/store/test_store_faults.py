"""Store faults: kill -9 at every commit point (writer and compaction), compaction racing a live
writer, two writers of one rank, data lost under a committed manifest, schema versions."""
from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest

from stagecache.extract.store import SCHEMA_VERSION, StoreError, StoreWriter, compact, open_store, write_group
from stagecache.extract.store.lock import StoreLock
from tests.extract.store.helpers import (LABEL_IDS, LABEL_NAMES, VIDEOS, assert_tables_equal, fork_call, make_video,
                                        wait_child, write_videos)

VIDS = VIDEOS[:4]
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("ref") / "s")
    write_videos(p, VIDS, units=True)
    return open_store(p).load()


def _no_leftovers(p):
    committed = {n[:-5] for n in os.listdir(os.path.join(p, "commits")) if not n.startswith(".")}
    assert set(os.listdir(os.path.join(p, "fragments"))) == committed
    assert not [n for n in os.listdir(os.path.join(p, "commits")) if n.startswith(".")]


@pytest.mark.parametrize("flush_bytes", [1, 1 << 30], ids=["unit-per-video", "one-unit-at-close"])
@pytest.mark.parametrize("compact_first", [False, True], ids=["resume", "compact-then-resume"])
def test_writer_killed_at_every_commit_point(ref, tmp_path, compact_first, flush_bytes):
    """kill -9 right after commit n = 1, 2, ... (base and sf of the videos of one flush are one unit
    of 2 commits): every video is whole in both groups or absent; a rerun (after a compaction, or
    not) equals the uninterrupted run array for array and leaves no uncommitted files."""
    per_unit = 1 if flush_bytes == 1 else len(VIDS)  # videos per commit unit
    for n in range(1, 20):
        p = str(tmp_path / f"s{n}")
        sig = wait_child(fork_call(lambda: write_videos(p, VIDS, units=True, flush_bytes=flush_bytes), kill_after=n))
        if sig == 0:
            break
        assert sig == signal.SIGKILL
        st = open_store(p)
        assert len(st.videos) == n // 2 * per_unit and st.missing("sf") == []
        if compact_first:  # the killed writer is dead: its leftovers go, its commits stay
            rep = compact(p, stale_seconds=0, **QUIET)
            assert rep["live_writers"] == [] and rep["removed_stale"] == n % 2
            _no_leftovers(p)
        write_videos(p, VIDS, units=True, flush_bytes=flush_bytes)
        assert_tables_equal(open_store(p).load(), ref)
        _no_leftovers(p)
    assert n == 2 * len(VIDS) // per_unit + 1


def test_compaction_killed_at_every_commit_point(ref, tmp_path):
    src = str(tmp_path / "src")
    write_videos(src, VIDS, units=True)  # a unit (base + sf fragment) per video
    for n in range(1, 10):
        p = str(tmp_path / f"c{n}")
        shutil.copytree(src, p)
        sig = wait_child(fork_call(lambda: compact(p, stale_seconds=0, **QUIET), kill_after=n))
        if sig == 0:
            break
        assert sig == signal.SIGKILL
        assert_tables_equal(open_store(p).load(), ref)
        rep = compact(p, stale_seconds=0, **QUIET)
        assert rep["removed_superseded"] == len(VIDS)  # the killed run's merged group, cleaned now
        st = open_store(p)
        assert {g: len(f) for g, f in st.fragments.items()} == {"base": 1, "sf": 1}
        assert_tables_equal(st.load(), ref)
        _no_leftovers(p)
    assert n == 3  # one merged commit per group


@pytest.mark.parametrize("pause", ["before-commit", "between-manifests"])
def test_compaction_leaves_a_live_writers_files_alone(ref, tmp_path, pause):
    """`compact --stale-minutes 0` while a writer has written a flush's data but not committed it,
    or committed half of its unit (paused there, deterministically): nothing of the writer's is
    touched, the half-committed unit stays invisible; the writer then commits, and the store equals
    an uninterrupted run, before and after a second compaction."""
    import stagecache.extract.store.commit as commit_protocol

    p = str(tmp_path / "s")
    write_videos(p, VIDS[:2], units=True)
    r_mid, w_mid = os.pipe()
    r_go, w_go = os.pipe()
    paused = []

    def pause_once(*_):
        if not paused:
            paused.append(1)
            os.write(w_mid, b"m")
            os.read(r_go, 1)

    def child():
        if pause == "between-manifests":  # in the child only: after the first manifest of the unit
            commit_protocol.commit_point = pause_once
        write_videos(p, VIDS, units=True, hook=pause_once if pause == "before-commit" else None)

    pid = fork_call(child)
    os.close(w_mid)  # a child dying early gives EOF here rather than a hang
    assert os.read(r_mid, 1) == b"m"
    uncommitted = set(os.listdir(os.path.join(p, "fragments"))) - {n[:-5] for n in os.listdir(os.path.join(p, "commits"))}
    # before-commit: VIDS[2]'s base data half written; between-manifests: its base committed, sf not
    assert len(uncommitted) == 1
    assert open_store(p).videos == VIDS[:2]
    rep = compact(p, stale_seconds=0, **QUIET)
    assert rep["live_writers"] == ["0"] and rep["removed_stale"] == 0
    assert uncommitted <= set(os.listdir(os.path.join(p, "fragments")))
    assert rep["merged"] == 4  # the committed fragments were merged meanwhile
    assert open_store(p).videos == VIDS[:2]
    os.write(w_go, b"g")
    assert wait_child(pid) == 0
    assert_tables_equal(open_store(p).load(), ref)
    compact(p, stale_seconds=0, **QUIET)
    assert_tables_equal(open_store(p).load(), ref)
    _no_leftovers(p)


def test_second_writer_of_a_rank_refused_lock_freed_by_close_and_kill(tmp_path):
    p = str(tmp_path / "s")
    kw = dict(split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
    w = StoreWriter(p, **kw)
    with pytest.raises(StoreError, match=rf"rank 0 is already being written by pid {os.getpid()} .*locks/0.lock"):
        StoreWriter(p, **kw)
    StoreWriter(p, rank=1, **kw).close()  # other ranks are independent
    held = StoreLock(w.loc, "c", what="compaction")
    with pytest.raises(StoreError, match="compaction is already"):
        compact(p, **QUIET)  # one compaction at a time
    held.release()
    w.close()
    StoreWriter(p, **kw).close()

    def hold_and_die():
        StoreWriter(p, **kw)
        os.kill(os.getpid(), signal.SIGKILL)
    assert wait_child(fork_call(hold_and_die)) == signal.SIGKILL
    StoreWriter(p, **kw).close()  # the kernel dropped the dead writer's lock


def test_manifest_without_data_is_ignored_redone_and_removed(ref, tmp_path):
    """A store damaged by an older stagecache (compaction removed a live writer's files after it
    committed): readable with a warning, the rerun redoes the lost video, nothing is left over."""
    p = str(tmp_path / "s")
    write_videos(p, VIDS, units=True)
    st = open_store(p)
    lost = next(f for f in st.fragments["sf"] if VIDS[1] in f.videos)
    shutil.rmtree(os.path.join(p, "fragments", lost.id))
    with pytest.warns(UserWarning, match=f"commits/{lost.id}.json is committed but its data"):
        st = open_store(p)
    assert st.missing("sf") == [VIDS[1]]
    q = str(tmp_path / "q")
    shutil.copytree(p, q)
    assert compact(q, stale_seconds=0, **QUIET)["removed_broken"] == 1
    for store in (p, q):
        write_videos(store, VIDS, units=True)  # the writer removes its own rank's broken manifest
        assert_tables_equal(open_store(store).load(), ref)
        _no_leftovers(store)


def test_commit_refused_when_data_vanished(tmp_path):
    p = str(tmp_path / "s")
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES, flush_bytes=1)
    w.declare_group("sf", {})
    w._hook = lambda fid, name: shutil.rmtree(os.path.join(p, "fragments", fid))
    with pytest.raises(StoreError, match="vanished before its commit; nothing of it was committed"):
        w.add_video("sf", "v", timestamps=[1.0], actor_counts=[2], object_counts=[0],
                    arrays={"actor_pooled": np.ones((2, 4))})
    w.close_quietly()
    assert not os.path.exists(os.path.join(p, "commits"))


def test_write_group_killed_after_commit(tmp_path):
    p = str(tmp_path / "s")
    write_videos(p, VIDS, groups=("base",), units=True)
    n = open_store(p).num_actors
    write_group(p, "tracks", {"v": 1}, {"actor_track": np.arange(n)})
    assert wait_child(fork_call(lambda: write_group(p, "tracks", {"v": 2}, {"actor_track": np.arange(n) * 2}),
                                kill_after=1)) == signal.SIGKILL
    st = open_store(p)
    assert np.array_equal(st.load({"tracks": None}).data["tracks/actor_track"].numpy(), np.arange(n) * 2)
    assert compact(p, stale_seconds=0, **QUIET)["removed_superseded"] == 1
    _no_leftovers(p)


@pytest.mark.parametrize("where", ["meta", "commit"])
def test_schema_version_checked_where_recorded(tmp_path, where):
    p = tmp_path / "s"
    write_videos(str(p), VIDS[:1], units=True)
    f = p / "meta" / "sf.json" if where == "meta" else next((p / "commits").iterdir())
    d = json.loads(f.read_text())
    d["schema_version"] = SCHEMA_VERSION + 1
    f.write_text(json.dumps(d))
    rel = f.relative_to(p).as_posix()
    with pytest.raises(StoreError, match=f"{rel} has schema_version {SCHEMA_VERSION + 1}"):
        open_store(str(p))
    if where == "meta":
        w = StoreWriter(str(p), split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
        with pytest.raises(StoreError, match=f"{rel} has schema_version"):
            w.declare_group("sf", {"backbone": "sf"})
        w.close()



def test_manifest_without_fragment_is_a_store_error(tmp_path):
    p = tmp_path / "s"
    write_videos(str(p), VIDS[:1], units=True)
    f = next((p / "commits").iterdir())
    d = json.loads(f.read_text())
    del d["fragment"]
    f.write_text(json.dumps(d))
    with pytest.raises(StoreError, match=f"{f.relative_to(p).as_posix()} names no fragment"):
        open_store(str(p))

def test_add_groups_checks_everything_before_buffering(tmp_path):
    p = str(tmp_path / "s")
    w = StoreWriter(p, split="val", label_ids=LABEL_IDS, label_names=LABEL_NAMES)
    w.declare_group("base", {})
    w.declare_group("sf", {})
    ts, ac, oc, base, feat = make_video(VIDS[0])
    with pytest.raises(ValueError, match="group 'sf'.*actor_pooled"):
        w.add_groups(VIDS[0], timestamps=ts, actor_counts=ac, object_counts=oc,
                     groups={"base": base, "sf": {"actor_pooled": np.zeros((int(ac.sum()) + 1, 4))}})
    w.add_groups(VIDS[0], timestamps=ts, actor_counts=ac, object_counts=oc, groups={"base": base, "sf": feat})
    w.close()
    st = open_store(p)
    assert st.videos == [VIDS[0]] and st.missing("sf") == []
    units = {tuple(json.loads(open(os.path.join(p, "commits", n)).read())["unit"]) for n in os.listdir(os.path.join(p, "commits"))}
    assert len(units) == 1 and len(next(iter(units))) == 2  # base and sf committed as one unit
