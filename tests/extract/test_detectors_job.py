"""The `extract detections` job and its click command, on a tiny synthetic video."""
import base64
import json
import os
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

torch.set_num_threads(1)
ava_io = pytest.importorskip("stagecache.extract.ava_io")


def _b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


@pytest.fixture()
def data(tmp_path):
    from stagecache.extract.synthetic import write_video

    vdir = tmp_path / "videos"
    vdir.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3 * 8, 48, 64, 3), dtype=np.uint8)  # 3 s at 8 fps
    write_video(str(vdir / "vid_a.mp4"), frames, fps=8, width=64, height=48)
    props = ava_io.Proposals(np.array(["vid_a"] * 3), np.array([1.0, 1.0, 2.0]),
                             np.array([[0.1, 0.1, 0.5, 0.9], [0.5, 0.2, 0.9, 0.8], [0.2, 0.2, 0.4, 0.4]]),
                             np.array([0.95, 0.5, 0.9]))
    ava_io.write_proposals_csv(str(tmp_path / "props.csv"), props)
    box = np.array([[4, 4, 30, 40], [10, 0, 64, 20]], np.float32)
    rows = [["vid_a_0001", "64", "48", "2", _b64(box), ""], ["vid_a_0002", "64", "48", "1", _b64(box[:1]), ""]]
    (tmp_path / "objs.tsv").write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return tmp_path


def test_job_with_video_frames(data):
    from stagecache.extract.detectors.job import DetectionsArgs, run_detections

    args = DetectionsArgs(video_dir=str(data / "videos"), out_dir=str(data / "out"), timestamps="1:2",
                          fps=8, person_detector="precomputed", person_file=str(data / "props.csv"),
                          person_score_thresh=0.8, objects="precomputed", objects_file=str(data / "objs.tsv"),
                          random_init=True, vg_min_size=48, vg_max_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_detections(args)
    assert summary == {"videos": 1, "keyframes": 2, "people": 2, "objects": 3}
    # The job must not switch autograd off for the rest of the process (it once did).
    assert torch.is_grad_enabled()
    out = data / "out"
    back = ava_io.read_proposals(str(out / "proposals.csv"))
    np.testing.assert_allclose(back.score, [0.95, 0.9], rtol=1e-6)  # 0.5 is below the threshold
    objs = ava_io.read_objects(str(out / "objects.csv"))
    np.testing.assert_array_equal(objs.timestamp, [1.0, 1.0, 2.0])
    np.testing.assert_allclose(objs.box[0], [4 / 64, 4 / 48, 30 / 64, 40 / 48], rtol=1e-6)
    part = np.load(out / "parts" / "vid_a.npz")
    assert part["object_feature"].shape == (3, 2048) and np.isfinite(part["object_feature"]).all()
    # the features are the VG head's pooling of the boxes on the decoded keyframes: the two
    # keyframes differ, so do the features of the same box
    assert not np.allclose(part["object_feature"][0], part["object_feature"][2])
    cfg = json.loads((out / "detections_config.json").read_text())
    assert cfg["objects"] == "precomputed" and cfg["fps"] == 8
    # a rerun resumes: the finished part is kept as it is
    mtime = os.path.getmtime(out / "parts" / "vid_a.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_detections(args)
    assert os.path.getmtime(out / "parts" / "vid_a.npz") == mtime


def test_command_and_validation(data):
    from stagecache.extract.detectors.job import DetectionsArgs
    from stagecache.pipelines.commands.detections import detections_cmd

    kf = data / "kf.csv"
    kf.write_text("vid_a,0002,0.1,0.1,0.2,0.2,-1,1\n")
    runner = CliRunner()
    base = ["--video-dir", str(data / "videos"), "--out", str(data / "cli"), "--keyframes", str(kf),
            "--person-detector", "precomputed", "--person-file", str(data / "props.csv"),
            "--person-score-thresh", "0"]
    res = runner.invoke(detections_cmd, base)
    assert res.exit_code == 0, res.output
    assert "1 keyframes: 1 people, 0 objects" in res.output
    assert not (data / "cli" / "objects.csv").exists()
    # other arguments into the same folder are refused rather than mixed
    res = runner.invoke(detections_cmd, base[:-1] + ["0.5"])
    assert res.exit_code != 0 and "other arguments" in str(res.exception)
    res = runner.invoke(detections_cmd, ["--video-dir", str(data / "videos"), "--out", str(data / "x"),
                                         "--timestamps", "1:2", "--person-detector", "detectron2"])
    assert res.exit_code != 0 and "needs person_config" in res.output
    with pytest.raises(ValueError, match="exactly one of keyframes"):
        DetectionsArgs(video_dir=str(data / "videos"), out_dir=str(data / "y"))
    with pytest.raises(ValueError, match="start:end"):
        DetectionsArgs(video_dir=str(data / "videos"), out_dir=str(data / "y"), timestamps="5:1")
    # jhmdb / ucf24 (keyframes from the GT pickle, tests/extract/test_tubes_boxes.py runs them)
    vd, pkl = str(data / "videos"), str(data / "props.csv")  # any existing file passes as the pickle path here
    with pytest.raises(ValueError, match="needs annotations"):
        DetectionsArgs(video_dir=vd, out_dir="y", dataset="jhmdb", split="train1")
    with pytest.raises(ValueError, match="no keyframes, timestamps"):
        DetectionsArgs(video_dir=vd, out_dir="y", dataset="ucf24", annotations=pkl, split="test1", timestamps="1:2")
    with pytest.raises(ValueError, match="split 2 needs a side: train or test"):
        DetectionsArgs(video_dir=vd, out_dir="y", dataset="jhmdb", annotations=pkl, split="2")
    with pytest.raises(ValueError, match="are for dataset jhmdb / multisports / ucf24"):
        DetectionsArgs(video_dir=vd, out_dir="y", timestamps="1:2", split="train1")
    a = DetectionsArgs(video_dir=vd, out_dir="y", dataset="ucf24", annotations=pkl, split="1", side="test")
    assert (a.split, a.fps) == ("test1", 25.0)
    assert DetectionsArgs(video_dir=vd, out_dir="y", timestamps="1:2").fps == 30.0



def test_keyframe_csv_is_deduplicated_by_millisecond_key(tmp_path):
    from stagecache.extract.detectors.job import read_keyframe_csv

    p = tmp_path / "kf.csv"
    p.write_text("video,timestamp\nv,902\nv,0902\nv,902.0004\nv,903.5\nw,1\n")
    out = read_keyframe_csv(str(p))
    assert sorted(out) == ["v", "w"]
    assert out["v"].tolist() == [902.0, 903.5] and out["w"].tolist() == [1.0]
