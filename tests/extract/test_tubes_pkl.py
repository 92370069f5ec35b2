"""extract/datasets/tubes_pkl.py: the ACT GT pickle (Python 2 style) -> extract features inputs."""
import pickle
import pickletools

import numpy as np
import pytest
from torch.testing import assert_close

from stagecache.extract.datasets.tube_split import tube_inputs
from stagecache.extract.datasets.tubes_pkl import (
    TUBE_DATASETS, TubeFormatError, find_tube_videos, frame_timestamp, parse_split, read_tube_pickle,
    split_name, timestamp_frame, to_annotations,
)
from stagecache.core.safe_pickle import UnsafePickleError
from stagecache.extract.synthetic.tubes import write_py2_pickle
from stagecache.extract.video import FrameFolderReader

# UCF101-24-like: video b has two tubes of one class overlapping in time, one starting and ending inside.
T_A = np.array([[1, 10, 20, 50, 80], [2, 12, 20, 52, 80], [3, 14, 20, 54, 80]], np.float32)
T_B1 = np.array([[f, 0, 0, 30, 40] for f in range(1, 6)], np.float32)
T_B2 = np.array([[f, 300, 100, 330, 250] for f in range(2, 5)], np.float32)  # x2 beyond width 320
T_B3 = np.array([[4, 100, 100, 120, 140], [5, 100, 100, 120, 140]], np.float32)  # another class
GT = {
    "labels": ["Basketball", "Biking", "Diving"],
    "gttubes": {"Basketball/v_a_c01": {0: [T_A]}, "Biking/v_b_c01": {1: [T_B1, T_B2], 2: [T_B3]}},
    "nframes": {"Basketball/v_a_c01": 3, "Biking/v_b_c01": 6},
    "train_videos": [["Biking/v_b_c01"], ["Basketball/v_a_c01"]],
    "test_videos": [["Basketball/v_a_c01"], ["Biking/v_b_c01"]],
    "resolution": {"Basketball/v_a_c01": (100, 200), "Biking/v_b_c01": (240, 320)},
}


@pytest.fixture
def pkl(tmp_path):
    p = tmp_path / "UCF101v2-GT.pkl"
    write_py2_pickle(p, GT)
    return p


def test_file_is_python2_style(pkl):
    ops = {op.name for op, _, _ in pickletools.genops(pkl.read_bytes())}
    assert "PROTO" in ops and {"SHORT_BINSTRING"} <= ops  # Python 2 str, not BINUNICODE
    assert not ops & {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES", "BINBYTES"}
    assert b"cnumpy.core.multiarray\n_reconstruct" in pkl.read_bytes()
    with open(pkl, "rb") as f:
        plain = pickle.load(f, encoding="latin1")  # how the reference code reads it
    np.testing.assert_array_equal(plain["gttubes"]["Biking/v_b_c01"][1][1], T_B2)


def test_reader_counts_boxes_splits(pkl):
    gt = read_tube_pickle(pkl)
    assert gt.labels == ["Basketball", "Biking", "Diving"]
    assert gt.nframes == {"Basketball/v_a_c01": 3, "Biking/v_b_c01": 6}
    assert gt.resolution["Biking/v_b_c01"] == (240, 320)
    assert [label for label, _ in gt.tubes["Biking/v_b_c01"]] == [1, 1, 2]
    assert_close(gt.tubes["Biking/v_b_c01"][1][1], T_B2.astype(np.float64))
    assert gt.videos("train", 1) == ["Biking/v_b_c01"] and gt.videos("test", 2) == ["Biking/v_b_c01"]
    with pytest.raises(TubeFormatError, match="split 3 does not exist"):
        gt.videos("test", 3)
    lm = gt.label_map()
    assert lm.ids == [1, 2, 3] and lm.names == gt.labels


def test_annotations_every_annotated_frame_normalised_with_tracks(pkl):
    gt = read_tube_pickle(pkl)
    ann = to_annotations(gt, ["Biking/v_b_c01"], fps=25.0)
    assert len(ann.video) == 5 + 3 + 2  # every box of every tube, overlapping ones kept
    assert ann.person.tolist() == [0] * 5 + [1] * 3 + [2] * 2  # tubes enumerated by label, then list order
    assert ann.action.tolist() == [2] * 8 + [3] * 2  # label index + 1
    assert_close(ann.timestamp[5:8], np.array([1, 2, 3], np.float64) / 25.0)
    # (x / width, y / height), clipped to [0, 1]
    assert_close(ann.box[5], np.array([300 / 320, 100 / 240, 1.0, 250 / 240], np.float32).clip(0, 1))
    assert_close(ann.box[0], np.array([0, 0, 30 / 320, 40 / 240], np.float32))
    strided = to_annotations(gt, ["Biking/v_b_c01"], fps=25.0, frame_stride=2)
    assert timestamp_frame(strided.timestamp, 25.0).tolist() == [1, 3, 5, 3, 5]
    assert strided.person.tolist() == [0, 0, 0, 1, 2]


def test_timestamps_round_trip():
    f = np.arange(1, 2000)
    for fps in (25.0, 30.0):
        assert (timestamp_frame(frame_timestamp(f, fps), fps) == f).all()
    assert parse_split("test2") == ("test", 2)
    with pytest.raises(TubeFormatError, match="train<N>"):
        parse_split("val")
    assert split_name("2", "test") == "test2" and split_name("train1", None) == split_name("train1", "train") == "train1"
    with pytest.raises(TubeFormatError, match="split train1 is a train split, but the side given is test"):
        split_name("train1", "test")
    with pytest.raises(TubeFormatError, match="split 3 needs a side"):
        split_name("3", None)
    with pytest.raises(TubeFormatError, match="train<N>"):
        split_name("1", "val")


def test_tube_inputs_and_video_lookup(pkl, tmp_path):
    root = tmp_path / "ucf"
    _frames(root / "rgb-images" / "Biking" / "v_b_c01", 6, (240, 320))  # frames 1..nframes at the resolution
    (root / "videos" / "Basketball").mkdir(parents=True)
    (root / "videos" / "Basketball" / "v_a_c01.avi").write_bytes(b"")
    found = find_tube_videos(root, TUBE_DATASETS["ucf24"], ["Biking/v_b_c01", "Basketball/v_a_c01", "x/y"])
    assert found == {"Biking/v_b_c01": (root / "rgb-images/Biking/v_b_c01", 0.0),
                     "Basketball/v_a_c01": (root / "videos/Basketball/v_a_c01.avi", 0.0)}
    t = tube_inputs("ucf24", str(pkl), "train1", str(root))
    assert t.fps == 25.0 and set(t.annotations.video.tolist()) == {"Biking/v_b_c01"}


def test_jhmdb_frame_folder_is_read(tmp_path):
    from PIL import Image

    d = tmp_path / "Frames" / "run" / "clip1"
    d.mkdir(parents=True)
    for k in range(1, 4):
        Image.fromarray(np.full((8, 10, 3), 40 * k, np.uint8)).save(d / f"{k:05d}.png")
    r = FrameFolderReader(d, fps=30.0, time_offset=0.0)
    assert r.num_frames == 3
    clip = r.read_clip(float(frame_timestamp(2, 30.0)), 1, 1)  # the frame shown at frame 2's timestamp
    assert clip.shape == (1, 8, 10, 3) and int(clip[0, 0, 0, 0]) == 80


@pytest.mark.parametrize("bad, message", [
    ({k: v for k, v in GT.items() if k != "resolution"}, "need keys"),
    ({**GT, "gttubes": {**GT["gttubes"], "Basketball/v_a_c01": {0: [T_A[:, :4]]}}}, "v_a_c01: tube 0 of label 0"),
    ({**GT, "gttubes": {**GT["gttubes"], "Basketball/v_a_c01": {0: [T_A * [9, 1, 1, 1, 1]]}}}, "frame numbers"),
    ({**GT, "gttubes": {**GT["gttubes"], "Basketball/v_a_c01": {7: [T_A]}}}, "label index 7"),
    ({**GT, "test_videos": [["nope/v"]]}, "video nope/v has no gttubes"),
    ({**GT, "nframes": [40, 40]}, "not an ACT ground-truth pickle .AttributeError"),  # a list, not a dict
])
def test_bad_pickles_name_the_file_and_video(tmp_path, bad, message):
    p = tmp_path / "JHMDB-GT.pkl"
    write_py2_pickle(p, bad)
    with pytest.raises(TubeFormatError, match=message) as e:
        read_tube_pickle(p)
    assert str(p) in str(e.value)


def test_code_in_the_pickle_is_refused(tmp_path):
    p = tmp_path / "JHMDB-GT.pkl"
    p.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_tube_pickle(p)


def _frames(d, n, hw):
    from PIL import Image

    d.mkdir(parents=True)
    for k in range(1, n + 1):
        Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(d / f"{k:05d}.jpg")


@pytest.mark.parametrize("n, hw, message", [
    (5, (240, 320), "has 5 frames, the GT pickle .* says 6"),  # the last frame missing
    (6, (240, 300), "frames are 240x300 .height x width., the GT pickle .* says 240x320"),
])
def test_a_frame_folder_that_disagrees_with_the_pickle(pkl, tmp_path, n, hw, message):
    root = tmp_path / "ucf"
    _frames(root / "rgb-images" / "Biking" / "v_b_c01", n, hw)
    with pytest.raises(TubeFormatError, match=r"rgb-images/Biking/v_b_c01: video Biking/v_b_c01 " + message):
        tube_inputs("ucf24", str(pkl), "train1", str(root))
