"""Import / export of STAGE's released layouts (extract/formats/stage_release.py, extract/formats/stage_export.py):
values, label columns (0 = background, c = id c), objects, export -> import identity, kill -9 at
every commit point then resume, and errors naming file and key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from stagecache.extract.ava_io import LabelMap, write_label_map
from stagecache.extract.formats.stage_export import export_release
from stagecache.extract.formats.stage_release import StageReleaseError, import_stage_i3d, import_stage_slowfast
from stagecache.extract.store import KILL_ENV, open_store
from stagecache.pipelines.tools.cache import verify_store
from tests.extract.formats.stage_files import random_release, write_i3d, write_objects, write_slowfast
from tests.extract.store.helpers import REPO, assert_tables_equal

IDS = [1, 5, 12, 80]


@pytest.fixture
def label_map(tmp_path):
    p = str(tmp_path / "lm.pbtxt")
    write_label_map(p, LabelMap(IDS, ["bend", "dance", "kick", "watch"]))
    return p


def _expected(actors, objects, ids, *, pooled):
    """Store-order (video name, time) arrays computed directly from the release content."""
    order = sorted(actors)
    kfs = [kf for v in order for kf in actors[v]]
    feat = np.concatenate([kf["features"].astype(np.float64).mean(axis=(2, 3, 4)) if pooled else kf["features"]
                           for kf in kfs]).astype(np.float16)
    obj = [objects[v, kf["time"]] for v in order for kf in actors[v]]
    prob = np.concatenate([o["cls_prob"] for o in obj])
    return dict(
        box=np.concatenate([kf["boxes"] for kf in kfs]), feat=feat,
        labels=np.concatenate([kf["labels"][:, ids] for kf in kfs]).astype(np.uint8),
        obox=np.concatenate([o["boxes"] for o in obj]), ocls=prob[:, 1:].argmax(1),
        oscore=prob[:, 1:].max(1), ofeat=np.concatenate([o["features"] for o in obj]).astype(np.float16),
        times=[float(kf["time"]) for kf in kfs])


def _check(store, exp, backbone):
    assert verify_store(store) == []
    t = open_store(store).load()
    assert t.kf_time.tolist() == exp["times"]
    np.testing.assert_array_equal(t.data["base/actor_box"].numpy(), exp["box"])
    np.testing.assert_array_equal(t.data[f"{backbone}/actor_pooled"].numpy(), exp["feat"])
    np.testing.assert_array_equal(t.data["base/actor_labels"].numpy(), exp["labels"])
    np.testing.assert_array_equal(t.data["base/object_box"].numpy(), exp["obox"])
    np.testing.assert_array_equal(t.data["base/object_class"].numpy(), exp["ocls"])
    np.testing.assert_array_equal(t.data["base/object_score"].numpy(), exp["oscore"])
    np.testing.assert_array_equal(t.data["base/object_feature"].numpy(), exp["ofeat"])
    return t


def test_i3d_import_values_labels_objects(tmp_path, label_map):
    actors, objects = random_release(0)
    d = write_i3d(str(tmp_path / "train_actors"), actors)
    obj = write_objects(str(tmp_path / "objects.h5"), objects)
    names = tmp_path / "classes.txt"
    names.write_text("__background__\nperson\ncup\nbike\nchair\n")
    s = import_stage_i3d(d, str(tmp_path / "s"), objects=obj, label_map=label_map, object_names=str(names),
                         progress=False)
    st = open_store(str(tmp_path / "s"))
    assert st.videos == sorted(actors) and st.attrs["split"] == "train_actors"
    assert st.attrs["label_ids"] == IDS and st.attrs["object_classes"] == ["person", "cup", "bike", "chair"]
    assert (s.videos, s.keyframes, s.actors, s.objects) == (3, 9, st.num_actors, st.num_objects) and s.bytes > 0
    _check(str(tmp_path / "s"), _expected(actors, objects, IDS, pooled=True), "stage_i3d")
    # Without a label map: every column but the background one, column c = id c.
    import_stage_i3d(d, str(tmp_path / "s80"), objects=obj, progress=False)
    st = open_store(str(tmp_path / "s80"))
    assert st.attrs["label_ids"] == list(range(1, 81)) and st.attrs["object_classes"][0] == "object_1"
    _check(str(tmp_path / "s80"), _expected(actors, objects, list(range(1, 81)), pooled=True), "stage_i3d")


def test_slowfast_import_split_on_last_underscore(tmp_path, label_map):
    actors, objects = random_release(1, tdims=())
    h5 = write_slowfast(str(tmp_path / "val.h5"), actors)
    obj = write_objects(str(tmp_path / "objects.h5"), objects)
    import_stage_slowfast(h5, str(tmp_path / "s"), objects=obj, label_map=label_map, progress=False)
    st = open_store(str(tmp_path / "s"))
    assert st.videos == ["-5KQ66BBWC4", "_145Aa_xkuE", "abc"] and st.attrs["split"] == "val"
    _check(str(tmp_path / "s"), _expected(actors, objects, IDS, pooled=False), "stage_slowfast")
    # No objects file: no objects, still a valid store.
    import_stage_slowfast(h5, str(tmp_path / "n"), label_map=label_map, progress=False)
    assert open_store(str(tmp_path / "n")).num_objects == 0 and verify_store(str(tmp_path / "n")) == []


@pytest.mark.parametrize("layout", ["stage-i3d", "stage-slowfast"])
def test_export_then_import_is_identity(tmp_path, label_map, layout):
    actors, objects = random_release(2, tdims=(1, 2, 2) if layout == "stage-i3d" else ())
    obj = write_objects(str(tmp_path / "objects.h5"), objects)
    if layout == "stage-i3d":
        src, run = write_i3d(str(tmp_path / "a"), actors), import_stage_i3d
    else:
        src, run = write_slowfast(str(tmp_path / "a.h5"), actors), import_stage_slowfast
    a = str(tmp_path / "store_a")
    run(src, a, split="val", objects=obj, label_map=label_map, progress=False)
    out = str(tmp_path / ("back" if layout == "stage-i3d" else "back.h5"))
    export_release(a, out, layout=layout, objects=str(tmp_path / "back_obj.h5"))
    b = str(tmp_path / "store_b")
    run(out, b, split="val", objects=str(tmp_path / "back_obj.h5"), label_map=label_map, progress=False)
    assert_tables_equal(open_store(a).load(), open_store(b).load())
    # The exported files are the release layout: 81 label columns, 5-D I3D features, key names.
    v = "-5KQ66BBWC4"
    if layout == "stage-i3d":
        assert sorted(os.listdir(os.path.join(out, v))) == ["0902.h5", "0903.h5", "1000.h5"]
        with h5py.File(os.path.join(out, v, "0902.h5"), "r") as f:
            n = len(actors[v][0]["boxes"])
            assert f["features"].shape == (n, 8, 1, 1, 1) and f["labels"].shape == (n, 81)
            np.testing.assert_array_equal(f["labels"][()][:, IDS], actors[v][0]["labels"][:, IDS])
    else:
        with h5py.File(out, "r") as f:
            assert sorted(f) == sorted(f"{v}_{t:04d}" for v in actors for t in (902, 903, 1000))
    with h5py.File(str(tmp_path / "back_obj.h5"), "r") as f:
        assert f"{v}_902_cls_prob" in f and f[f"{v}_902_cls_prob"].shape[1] == 5


def _import_cmd(src, store, obj, env_n=None):
    code = (f"import sys; sys.path.insert(0, {REPO!r}); from stagecache.extract.formats.stage_release import import_stage_i3d; "
            f"import_stage_i3d({src!r}, {store!r}, objects={obj!r}, progress=False)")
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop(KILL_ENV, None)
    if env_n is not None:
        env[KILL_ENV] = str(env_n)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_kill_at_every_commit_then_resume_gives_same_store(tmp_path):
    actors, objects = random_release(3, videos=("-a_b", "c"), times=(902, 903))
    src = write_i3d(str(tmp_path / "actors"), actors)
    obj = write_objects(str(tmp_path / "objects.h5"), objects)
    ref = str(tmp_path / "ref")
    import_stage_i3d(src, ref, objects=obj, progress=False)
    want = open_store(ref).load()
    for n in range(1, 5):  # 2 videos x (base, backbone) manifests
        store = str(tmp_path / f"k{n}")
        r = _import_cmd(src, store, obj, env_n=n)
        assert r.returncode == -signal.SIGKILL, (n, r.returncode, r.stderr[-2000:])
        r = _import_cmd(src, store, obj)
        assert r.returncode == 0, r.stderr[-2000:]
        assert_tables_equal(open_store(store).load(), want)


def test_errors_name_file_and_key(tmp_path, label_map):
    actors, objects = random_release(4, videos=("vid",), times=(902, 903))
    d = write_i3d(str(tmp_path / "a"), actors)
    # A missing objects key (the 903 keyframe) names the file and the key the official loader reads.
    del objects["vid", 903]
    obj = write_objects(str(tmp_path / "o.h5"), objects)
    with pytest.raises(StageReleaseError, match=r"o\.h5: missing key 'vid_903_features'"):
        import_stage_i3d(d, str(tmp_path / "s1"), objects=obj, progress=False)
    with h5py.File(os.path.join(d, "vid", "0903.h5"), "a") as f:
        del f["labels"]
    with pytest.raises(StageReleaseError, match=r"0903\.h5 lacks dataset 'labels'"):
        import_stage_i3d(d, str(tmp_path / "s2"), progress=False)
    with h5py.File(os.path.join(d, "vid", "0903.h5"), "a") as f:
        f["labels"] = np.zeros((len(actors["vid"][1]["boxes"]), 81), np.float32)
        f["boxes"][...] = f["boxes"][()] * 100  # pixel boxes
    if len(actors["vid"][1]["boxes"]):
        with pytest.raises(StageReleaseError, match=r"0903\.h5: boxes are not normalised"):
            import_stage_i3d(d, str(tmp_path / "s3"), progress=False)
    with pytest.raises(StageReleaseError, match=r"labels have 81 columns .* label ids \[81\]"):
        p = str(tmp_path / "big.pbtxt")
        write_label_map(p, LabelMap([1, 81], ["a", "b"]))
        import_stage_i3d(d, str(tmp_path / "s4"), label_map=p, progress=False)
    with pytest.raises(StageReleaseError, match="not a directory"):
        import_stage_i3d(obj, str(tmp_path / "s5"), progress=False)
    (tmp_path / "a" / "vid" / "notes.txt").write_text("x")
    with pytest.raises(StageReleaseError, match=r"notes\.txt: not a <timestamp>\.h5 file"):
        import_stage_i3d(d, str(tmp_path / "s6"), progress=False)
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as f:
        f.create_group("nounderscore")
    with pytest.raises(StageReleaseError, match=r"bad\.h5: key 'nounderscore'"):
        import_stage_slowfast(bad, str(tmp_path / "s7"), progress=False)


def test_failed_export_leaves_no_file_under_final_name(tmp_path, label_map):
    """The export writes each file under a temporary name: an export stopped half-way (here by a
    bad object class found at a later keyframe) leaves neither a truncated file nor a leftover."""
    import json

    actors, objects = random_release(2, tdims=())
    a = str(tmp_path / "store_a")
    import_stage_slowfast(write_slowfast(str(tmp_path / "a.h5"), actors), a, split="val",
                          objects=write_objects(str(tmp_path / "objects.h5"), objects), label_map=label_map,
                          progress=False)
    root = os.path.join(a, "zarr.json")
    meta = json.load(open(root))
    meta["attributes"]["stagecache"]["object_classes"] = ["person"]  # class ids >= 1 are now out of range
    json.dump(meta, open(root, "w"))
    assert open_store(a).load().data["base/object_class"].max() >= 1
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StageReleaseError, match="outside the store's 1 object classes"):
        export_release(a, str(out / "back.h5"), layout="stage-slowfast", objects=str(out / "obj.h5"))
    assert os.listdir(out) == []
