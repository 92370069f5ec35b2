"""predict-video: annotated MP4 on a synthetic video, proposals handling, argument checks, and (once
extract/features.py exists) the whole command on a tiny run."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from stagecache.extract import ava_io
from stagecache.pipelines.tools.predict_video import (
    PredictVideoArgs, annotate_frame, keyframe_times, video_info, video_proposals, write_annotated_video,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from stagecache.extract.synthetic import make_video_dataset

    return make_video_dataset(tmp_path_factory.mktemp("ds"), n_videos=1, seconds=4, fps=10, width=64, height=48,
                              splits=("val",))


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(c.streams.video[0])]


def test_annotate_frame_draws_the_box():
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    out = annotate_frame(img, np.array([[0.25, 0.25, 0.75, 0.75]]), [[("stand", 0.9)]])
    assert out.shape == img.shape
    # The outline is on the box edge (x = 16 .. 48 at y = 36); the far corner stays black.
    assert out[36, 16].sum() > 0 and out[36, 48].sum() > 0 and out[2, 62].sum() == 0


def test_annotated_video_marks_frames_near_keyframes(dataset, tmp_path):
    info = json.loads((dataset / "dataset.json").read_text())
    video = dataset / "videos" / f"{info['splits']['val']['videos'][0]}.mp4"
    props = ava_io.read_proposals(dataset / info["splits"]["val"]["proposals"])
    props = props.select(props.video == video.stem)
    rng = np.random.default_rng(0)
    n = len(props)
    preds = ava_io.Predictions(video=np.repeat(props.video, 2), timestamp=np.repeat(props.timestamp, 2),
                               box=np.repeat(props.box, 2, axis=0), action=np.tile([1, 6], n),
                               score=rng.uniform(0.5, 1.0, 2 * n).astype(np.float32))
    ava_io.write_predictions(tmp_path / "p.csv", preds)
    preds = ava_io.read_predictions(tmp_path / "p.csv")
    out = tmp_path / "a.mp4"
    written = write_annotated_video(video, out, preds, {1: "stand", 6: "talk to"}, time_offset=900.0, top_k=2,
                                    min_score=0.0, show_seconds=0.15)
    src, ann = _decode(video), _decode(out)
    assert written == len(src) == len(ann) == info["num_frames"]
    assert ann[0].shape == (48, 64, 3)
    fps = info["fps"]
    kf_frames = [int(round((t - 900.0) * fps)) for t in np.unique(props.timestamp)]
    for i in range(len(src)):
        diff = float(np.abs(ann[i] - src[i]).mean())
        near = min(abs(i - k) for k in kf_frames) <= 0.15 * fps
        # Drawn frames differ clearly; the others only by re-encoding noise.
        assert (diff > 10.0) if near else (diff < 5.0), (i, diff, near)


def test_arguments_and_proposals(dataset, tmp_path):
    info = json.loads((dataset / "dataset.json").read_text())
    name = info["splits"]["val"]["videos"][0]
    video = dataset / "videos" / f"{name}.mp4"
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    props_file = str(dataset / info["splits"]["val"]["proposals"])
    with pytest.raises(ValueError, match="either --proposals or --person-detector"):
        PredictVideoArgs(video=str(video), run_dir=str(run), out_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="no best.pt"):
        PredictVideoArgs(video=str(video), run_dir=str(tmp_path), out_dir="o", proposals=props_file)
    a = PredictVideoArgs(video=str(video), run_dir=str(run), out_dir="o", proposals=props_file, time_offset=900.0)
    assert a.video_name == name
    p = video_proposals(a)
    assert len(p) > 0 and set(p.video) == {name}
    bad = PredictVideoArgs(video=str(video), run_dir=str(run), out_dir="o", proposals=props_file, video_name="nope")
    with pytest.raises(ValueError, match="no proposals for video 'nope'"):
        video_proposals(bad)
    vi = video_info(video)
    assert vi["fps"] == pytest.approx(10) and (vi["width"], vi["height"]) == (64, 48)
    assert vi["duration"] == pytest.approx(4.0, abs=0.15)
    det = PredictVideoArgs(video=str(video), run_dir=str(run), out_dir="o", person_detector="torchvision",
                           time_offset=900.0)
    np.testing.assert_allclose(keyframe_times(det, vi["duration"]), [901.0, 902.0, 903.0])


def test_predict_video_end_to_end(tmp_path):
    """Whole command: a tiny random-init SlowFast extracts train/val stores of a synthetic dataset, a
    1-epoch linear run is trained on them, then predict-video runs on a val video with the dataset's
    proposals, rebuilding the backbone from the run's store attributes."""
    from stagecache.extract.features import ExtractArgs, run_extract
    from stagecache.extract.synthetic import make_video_dataset
    from stagecache.pipelines.commands.predict_video import predict_video_cli
    from stagecache.pipelines.training.train import TrainArgs, train
    from click.testing import CliRunner

    ds = make_video_dataset(tmp_path / "ds", n_videos=1, seconds=4, fps=10, width=64, height=48)
    info = json.loads((ds / "dataset.json").read_text())
    stores = {}
    for split in ("train", "val"):
        files = info["splits"][split]
        stores[split] = tmp_path / f"{split}.zarr"
        run_extract(ExtractArgs(
            split=split, videos=str(ds / "videos"), label_map=str(ds / info["label_map"]),
            annotations=str(ds / files["annotations"]), proposals=str(ds / files["proposals"]),
            out=str(stores[split]), random_init=True, backbone_kwargs=dict(model_depth=50, stem_dim_outs=(8, 1)),
            sampling_overrides=dict(frames=4, short_side=48), time_offset=900.0, num_workers=1, progress=False,
            fps=float(info["fps"]), batch_size=4))
    run = tmp_path / "run"
    train(TrainArgs(train_store=str(stores["train"]), val_store=str(stores["val"]), head="linear",
                    out_dir=str(run), epochs=1, val_boxes="gt", device="cpu", progress=False))
    name = info["splits"]["val"]["videos"][0]
    out = tmp_path / "pv"
    r = CliRunner().invoke(predict_video_cli, [
        str(ds / "videos" / f"{name}.mp4"), "--run", str(run), "--out", str(out),
        "--proposals", str(ds / info["splits"]["val"]["proposals"]), "--time-offset", "900",
        "--backbone-random-init", "--device", "cpu", "--min-score", "0"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    preds = ava_io.read_predictions(out / f"{name}_predictions.csv")
    props = ava_io.read_proposals(ds / info["splits"]["val"]["proposals"])
    props = props.select(props.video == name)
    n_classes = 7
    assert len(preds) == len(props) * n_classes and set(preds.video) == {name}
    assert set(np.unique(preds.timestamp)) == set(np.unique(props.timestamp))
    frames = _decode(out / f"{name}_annotated.mp4")
    assert len(frames) == info["num_frames"] and frames[0].shape == (48, 64, 3)
    # Without --backbone-random-init the random-weight store is not silently reproduced.
    r = CliRunner().invoke(predict_video_cli, [
        str(ds / "videos" / f"{name}.mp4"), "--run", str(run), "--out", str(tmp_path / "pv2"),
        "--proposals", str(ds / info["splits"]["val"]["proposals"]), "--time-offset", "900"])
    assert r.exit_code != 0 and "RANDOM-WEIGHT" in r.output
