"""AVA-Kinetics end to end (extract/datasets/ava_kinetics.py, `extract features --dataset ava-kinetics`):
keyframe -> frame of its clip on frames that encode their own time, a Kinetics clip stored exactly as
its AVA twin, mixed stores training on AVA + Kinetics and validating on AVA alone, missing clips
skipped and listed, and bad input."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from stagecache.extract import ava_io
from stagecache.extract.datasets.ava_kinetics import AvaKineticsError, clip_span
from stagecache.extract.features import ExtractArgs, run_extract
from stagecache.extract.store import open_store
from stagecache.extract.synthetic import make_video_dataset
from stagecache.extract.synthetic.ava_kinetics import make_ava_kinetics_dataset
from stagecache.extract.synthetic.video import write_video
from stagecache.extract.video import find_videos, open_video

torch.set_num_threads(1)
TINY = dict(model_depth=50, stem_dim_outs=(8, 1))
SAMPLING = dict(frames=4, short_side=32)
FPS = 30


def _time_frame(i: int, size=16) -> np.ndarray:
    """Frame i shows its index: red = (i % 25) * 10, green = (i // 25) * 40."""
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0], img[..., 1] = (i % 25) * 10, (i // 25) * 40
    return img


def _index(frame: np.ndarray) -> int:
    r, g = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round(g / 40)) * 25 + int(round(r / 10))


def test_keyframe_reads_the_frame_of_its_own_time_in_clip_files_and_frame_folders(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    write_video(d / "yt_id-A_000010_000014.mp4", [_time_frame(i) for i in range(4 * FPS)], fps=FPS, width=16,
                height=16)
    folder = d / "yt_id-B_000020_000024"
    folder.mkdir()
    for i in range(4 * FPS):
        Image.fromarray(_time_frame(i)).save(folder / f"{folder.name}_{i + 1:06d}.jpg", quality=100)
    found = find_videos(d, kinetics_names=True)
    assert {v: o for v, (_, o) in found.items()} == {"yt_id-A": 10.0, "yt_id-B": 20.0}
    for v, (path, offset) in found.items():
        with open_video(path, fps=FPS, time_offset=offset) as r:
            for t in (offset + 0.5, offset + 2.0, offset + 3.1):  # the one keyframe anywhere in its clip
                i = _index(r.read_clip(t, 1, 1)[0])
                assert offset + i / FPS == pytest.approx(t, abs=0.5 / FPS), (v, t, i)
    assert clip_span("x/yt_id-A_000010_000014.mp4") == ("yt_id-A", 10.0, 14.0) and clip_span("plain.mp4") is None


def _args(root, out, split="train", **kw):
    a = dict(split=split, videos=str(root / "videos"), label_map=str(root / "annotations/label_map.pbtxt"),
             annotations=str(root / f"annotations/{split}.csv"),
             proposals=str(root / f"annotations/{split}_proposals.pkl"),
             out=str(out), random_init=True, backbone_kwargs=TINY, sampling_overrides=SAMPLING, time_offset=900.0,
             num_workers=0, progress=False, batch_size=4, device="cpu")
    a.update(kw)
    return ExtractArgs(**a)


def _kin(root, split="train", **kw):
    out = kw.pop("out", root / f"{split}_{kw.get('subset', 'all')}.zarr")
    kw.setdefault("kinetics_annotations", str(root / f"annotations/kinetics_{split}.csv"))
    return _args(root, out, split, dataset="ava-kinetics", **kw)


def _by_keyframe(path) -> dict:
    """(video, keyframe time) -> {array: actor rows} of a store (actor-level arrays; no objects here)."""
    t = open_store(str(path)).load()
    off = t.kf_actor_offset.numpy()
    return {(t.video_names[int(v)], round(float(ts), 3)): {
        k: a[int(off[i]):int(off[i + 1])] for k, a in t.data.items() if k.startswith(("base/actor", "slowfast_r50/"))}
        for i, (v, ts) in enumerate(zip(t.kf_video.tolist(), t.kf_time.tolist()))}


def _same(a: dict, b: dict, skip=()):
    for name, x in a.items():
        if name not in skip:
            torch.testing.assert_close(x, b[name], msg=name)


KW = dict(seed=0, n_videos=3, n_kinetics=2, seconds=5, width=64, height=48)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ak = make_ava_kinetics_dataset(tmp_path_factory.mktemp("ak"), splits=("train", "val"), **KW)
    ava = make_video_dataset(tmp_path_factory.mktemp("ava"), splits=("train", "val"),
                             **{k: v for k, v in KW.items() if k != "n_kinetics"})
    return ak, ava


def _kinetics_videos(root, split):
    lm = ava_io.read_label_map(root / "annotations/label_map.pbtxt")
    return set(ava_io.read_annotations(root / f"annotations/kinetics_{split}.csv", lm).video.tolist())


def test_clips_are_stored_as_their_ava_twins(data):
    ak, ava = data
    s = run_extract(_kin(ak))
    assert s["failed"] == [] and s["done"] == 3
    twin_args = _args(ava, ava / "train.zarr", proposals=str(ava / "annotations/train_proposals.csv"))
    assert run_extract(twin_args)["done"] == 3
    mixed, twin = _by_keyframe(ak / "train_all.zarr"), _by_keyframe(ava / "train.zarr")
    kin = _kinetics_videos(ak, "train")
    assert len(kin) == 2
    # every AVA keyframe, and each clip's one keyframe (not the proposals' seconds either side of it)
    lm = ava_io.read_label_map(ak / "annotations/label_map.pbtxt")
    rows = ava_io.read_annotations(ak / "annotations/kinetics_train.csv", lm)
    clip_kf = set(zip(rows.video.tolist(), (rows.timestamp + 890.0).tolist()))
    assert len(clip_kf) == 2
    assert sorted((v, t + 890.0 if v in kin else t) for v, t in mixed) == sorted(
        k for k in twin if k[0] not in kin or k in clip_kf)
    for (v, t), arrays in mixed.items():
        # a Kinetics keyframe at its video's own second t (clip from second 10) is the AVA twin's t + 890
        _same(arrays, twin[(v, t + 890.0 if v in kin else t)], skip=("base/actor_track",))  # Kinetics: no person id


def test_mixed_train_store_and_ava_only_val_store_train_a_head(data, tmp_path):
    from stagecache.pipelines.training.train import TrainArgs, train

    ak, _ = data
    train_store = ak / "train_all.zarr"
    if not train_store.exists():
        run_extract(_kin(ak))
    assert run_extract(_kin(ak, "val", subset="ava"))["done"] == 1
    val = {v for v, _ in _by_keyframe(ak / "val_ava.zarr")}
    assert val.isdisjoint(_kinetics_videos(ak, "val")) and len(val) == 1
    assert _kinetics_videos(ak, "train") <= {v for v, _ in _by_keyframe(train_store)}
    out = tmp_path / "run"
    train(TrainArgs(train_store=str(train_store), val_store=str(ak / "val_ava.zarr"), head="linear", out_dir=str(out),
                    epochs=2, batch_size=8, device="cpu", progress=False))
    preds = ava_io.read_predictions(out / "val_predictions.csv")
    assert set(preds.video.tolist()) == set(val)  # validated on AVA alone


def test_missing_and_unreadable_clips_are_skipped_listed_and_the_rest_stored_identically(data, tmp_path):
    ak, _ = data
    assert run_extract(_kin(ak, "val"))["done"] == 3
    gone, broken = (sorted((ak / "videos").glob(f"{v}_000010_*.mp4"))[0] for v in sorted(_kinetics_videos(ak, "val")))
    hidden, saved = tmp_path / gone.name, tmp_path / ("saved_" + broken.name)
    gone.rename(hidden)
    broken.rename(saved)
    broken.write_bytes(b"not a video")  # a clip that cannot be read
    try:
        out = tmp_path / "val_missing.zarr"
        s = run_extract(_kin(ak, "val", out=str(out)))
    finally:
        hidden.rename(gone)
        saved.replace(broken)
    missing, unreadable = clip_span(gone)[0], clip_span(broken)[0]
    assert s["done"] == 1 and s["missing_videos"] == [missing] and len(s["failed"]) == 2
    failed_list = (tmp_path / "val_missing.slowfast_r50.failed.txt").read_text()
    listed = dict(line.split("\t") for line in failed_list.splitlines())
    assert sorted(listed) == sorted([missing, unreadable]) and "not found" in listed[missing]
    full, part = _by_keyframe(ak / "val_all.zarr"), _by_keyframe(out)
    assert sorted(part) == sorted(k for k in full if k[0] not in (missing, unreadable))
    for k, arrays in part.items():
        _same(arrays, full[k])


def test_row_outside_its_clip_is_a_one_line_error(data, tmp_path):
    ak, _ = data
    bad = tmp_path / "kinetics_bad.csv"
    lines = (ak / "annotations/kinetics_val.csv").read_text().splitlines()
    v = lines[1].split(",")[0]
    lines[1] = ",".join([v, "42"] + lines[1].split(",")[2:])
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(AvaKineticsError, match=rf"kinetics_bad.csv: row 2 \(video {v}, 42 s\): no clip") as e:
        run_extract(_kin(ak, "val", kinetics_annotations=str(bad), out=str(tmp_path / "x.zarr")))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="ava-kinetics"):
        _args(ak, tmp_path / "y.zarr", subset="ava")
    props = pickle.loads((ak / "annotations/val_proposals.pkl").read_bytes())
    assert any(k.startswith(v + ",") for k in props)  # Kinetics keys: YouTube id and its own second
