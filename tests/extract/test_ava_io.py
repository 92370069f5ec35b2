"""AVA file formats: round trips, timestamp keys, errors naming file and line, clipping."""
from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest

from stagecache.extract import ava_io
from stagecache.extract.ava_io import AvaFormatError
from stagecache.extract.formats.csv_table import _from_rows, load_csv, read_rows

AVA60 = "/work/shared/data/ava_action_list_60_for_activitynet.pbtxt"

AVA80_NAMES = [
    "bend/bow (at the waist)", "crawl", "crouch/kneel", "dance", "fall down", "get up", "jump/leap",
    "lie/sleep", "martial art", "run/jog", "sit", "stand", "swim", "walk", "answer phone", "brush teeth",
    "carry/hold (an object)", "catch (an object)", "chop", "climb (e.g., a mountain)", "clink glass",
    "close (e.g., a door, a box)", "cook", "cut", "dig", "dress/put on clothing", "drink",
    "drive (e.g., a car, a truck)", "eat", "enter", "exit", "extract", "fishing", "hit (an object)",
    "kick (an object)", "lift/pick up", "listen (e.g., to music)", "open (e.g., a window, a car door)",
    "paint", "play board game", "play musical instrument", "play with pets", "point to (an object)",
    "press", "pull (an object)", "push (an object)", "put down", "read", "ride (e.g., a bike, a car, a horse)",
    "row boat", "sail boat", "shoot", "shovel", "smoke", "stir", "take a photo",
    "text on/look at a cellphone", "throw", "touch (an object)", "turn (e.g., a screwdriver)",
    "watch (e.g., TV)", "work on a computer", "write", "fight/hit (a person)",
    "give/serve (an object) to (a person)", "grab (a person)", "hand clap", "hand shake", "hand wave",
    "hug (a person)", "kick (a person)", "kiss (a person)", "lift (a person)", "listen to (a person)",
    "play with kids", "push (another person)", "sing to (e.g., self, a person, a group)",
    "take (an object) from (a person)", "talk to (e.g., self, a person, a group)", "watch (a person)",
]


def _types(i):
    return "PERSON_MOVEMENT" if i <= 14 else "OBJECT_MANIPULATION" if i <= 63 else "PERSON_INTERACTION"


# ----------------------------------------------------------------------------- timestamps, label maps

def test_timestamp_key_and_format():
    assert ava_io.timestamp_key("902") == ava_io.timestamp_key("0902") == ava_io.timestamp_key("902.000000") == 902000
    assert ava_io.same_timestamp(902, "0902.0") and not ava_io.same_timestamp(902, 902.5)
    np.testing.assert_array_equal(ava_io.timestamp_keys(np.array([902.0, 0.5, 1798.25])), [902000, 500, 1798250])
    assert ava_io.format_timestamp(902.0) == "0902" and ava_io.format_timestamp(1798) == "1798"
    assert ava_io.format_timestamp(902.5) == "902.5"


def test_label_map_60_and_80(tmp_path):
    lm = ava_io.read_label_map(AVA60)
    assert len(lm) == 60 and lm.ids[:3] == [1, 3, 4] and lm.ids[-1] == 80
    assert lm.name(1) == "bend/bow (at the waist)" and lm.name(80) == "watch (a person)"
    p80 = tmp_path / "ava80.pbtxt"
    p80.write_text("".join(f'item {{\n  name: "{n}"\n  label_id: {i}\n  label_type: {_types(i)}\n}}\n'
                           for i, n in enumerate(AVA80_NAMES, start=1)))
    lm80 = ava_io.read_label_map(p80)
    assert lm80.ids == list(range(1, 81)) and lm80.names == AVA80_NAMES
    # names shared with the 60-class list agree
    assert all(lm80.name(i) == lm.name(i) for i in lm.ids)
    out = tmp_path / "rt.pbtxt"
    ava_io.write_label_map(out, lm80)
    assert ava_io.read_label_map(out) == lm80
    bad = tmp_path / "bad.pbtxt"
    bad.write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n}\n')
    with pytest.raises(AvaFormatError, match=r"bad.pbtxt:5: .*needs `name` and `id`"):
        ava_io.read_label_map(bad)


# ----------------------------------------------------------------------------- round trips

def _boxes(rng, n):
    xy = rng.uniform(0, 0.5, (n, 2))
    return np.round(np.concatenate([xy, xy + rng.uniform(0.1, 0.5, (n, 2))], 1), 3).astype(np.float32)


def test_annotations_round_trip_and_formats(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    ann = ava_io.Annotations(rng.choice(["-5KQ66BBWC4", "vid_b"], n), rng.choice([902.0, 903.0, 904.5], n),
                             _boxes(rng, n), rng.integers(1, 81, n), rng.integers(0, 5, n))
    p = tmp_path / "ann.csv"
    ava_io.write_annotations(p, ann)
    first = p.read_text().splitlines()[0].split(",")
    assert len(first) == 8 and (first[1] in ("0902", "0903", "904.5"))
    back = ava_io.read_annotations(p)
    for f in ("video", "timestamp", "box", "action", "person"):
        np.testing.assert_array_equal(getattr(back, f), getattr(ann, f))
    # 7-column file (no person id) and the AVA zero-padded timestamp
    p7 = tmp_path / "ann7.csv"
    p7.write_text("vid,0902,0.077,0.151,0.283,0.811,80\nvid,902.000000,0.1,0.2,0.3,0.4,12\n")
    a7 = ava_io.read_annotations(p7, label_map=ava_io.read_label_map(AVA60))
    np.testing.assert_array_equal(a7.person, [-1, -1])
    np.testing.assert_array_equal(a7.keys(), [902000, 902000])
    assert a7.box.dtype == np.float32 and a7.box[0, 0] == np.float32(0.077)


def test_predictions_objects_proposals_csv_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n = 40
    v, t, b = rng.choice(["a", "b"], n), rng.choice([1.0, 2.0], n), _boxes(rng, n)
    s = rng.random(n).astype(np.float32)
    preds = ava_io.Predictions(v, t, b, rng.integers(1, 81, n), s)
    ava_io.write_predictions(tmp_path / "p.csv", preds)
    pb = ava_io.read_predictions(tmp_path / "p.csv")
    for f in ("video", "timestamp", "box", "action", "score"):
        np.testing.assert_array_equal(getattr(pb, f), getattr(preds, f))
    objs = ava_io.Objects(v, t, b, rng.integers(0, 1600, n), s)
    ava_io.write_objects(tmp_path / "o.csv", objs)
    ob = ava_io.read_objects(tmp_path / "o.csv")
    for f in ("video", "timestamp", "box", "class_id", "score"):
        np.testing.assert_array_equal(getattr(ob, f), getattr(objs, f))
    props = ava_io.Proposals(v[:10], t[:10], b[:10], s[:10])
    ava_io.write_proposals_csv(tmp_path / "props.csv", props)
    pr = ava_io.read_proposals(tmp_path / "props.csv")
    for f in ("video", "timestamp", "box", "score"):
        np.testing.assert_array_equal(getattr(pr, f), getattr(props, f))


def test_pyslowfast_proposals_dedupe(tmp_path):
    p = tmp_path / "ava_detection_val_boxes_and_labels.csv"
    p.write_text("v,0902,0.1,0.1,0.5,0.9,12,0.98\nv,0902,0.1,0.1,0.5,0.9,17,0.98\nv,902,0.1,0.1,0.5,0.9,-1,0.98\n"
                 "v,0902,0.6,0.1,0.9,0.9,-1,0.71\nv,0903,0.1,0.1,0.5,0.9,-1,0.98\n")
    pr = ava_io.read_proposals(p)
    assert len(pr) == 3
    np.testing.assert_array_equal(pr.keys(), [902000, 902000, 903000])
    np.testing.assert_allclose(pr.score, [0.98, 0.71, 0.98])


def test_mmaction_pickle_and_coco_json(tmp_path):
    pk = tmp_path / "dense_proposals_val.pkl"
    data = {"vidA,0902": np.array([[0.1, 0.2, 0.3, 0.4, 0.9], [0.5, 0.5, 0.9, 0.9, 0.8]]),
            "vidA,0903": np.array([[0.1, 0.2, 0.3, 0.4, 0.7]])}
    pk.write_bytes(pickle.dumps(data))
    pr = ava_io.read_proposals(pk)
    assert list(pr.video) == ["vidA"] * 3
    np.testing.assert_array_equal(pr.keys(), [902000, 902000, 903000])
    np.testing.assert_allclose(pr.box[1], [0.5, 0.5, 0.9, 0.9])
    np.testing.assert_allclose(pr.score, [0.9, 0.8, 0.7])
    # results list, pixels normalised by width/height
    js = tmp_path / "res.json"
    js.write_text(json.dumps([{"video": "vidA", "timestamp": 902, "bbox": [32, 36, 64, 180], "score": 0.9,
                               "width": 320, "height": 360},
                              {"video": "vidA", "timestamp": "0903", "bbox": [0.1, 0.1, 0.2, 0.3], "score": 0.5}]))
    pj = ava_io.read_proposals(js)
    np.testing.assert_allclose(pj.box, [[0.1, 0.1, 0.3, 0.6], [0.1, 0.1, 0.3, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(pj.keys(), [902000, 903000])
    # COCO images + annotations; file_name carries video and timestamp (video id with '_')
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "my_vid/my_vid_0902.jpg", "width": 100, "height": 50},
                   {"id": 8, "video": "other", "timestamp": 905.0, "file_name": "x.jpg"}],
        "annotations": [{"image_id": 7, "bbox": [10, 5, 50, 25], "score": 0.6, "category_id": 1},
                        {"image_id": 8, "bbox": [0.2, 0.2, 0.1, 0.1]}]}))
    pc = ava_io.read_proposals(coco)
    assert list(pc.video) == ["my_vid", "other"]
    np.testing.assert_allclose(pc.box, [[0.1, 0.1, 0.6, 0.6], [0.2, 0.2, 0.3, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(pc.score, [0.6, 1.0])
    np.testing.assert_array_equal(pc.keys(), [902000, 905000])


def test_excluded_and_frame_list_round_trip(tmp_path):
    ex = tmp_path / "ex.csv"
    ex.write_text("vidA,0902\nvidB,903.000000\n")
    pairs = ava_io.read_excluded(ex)
    assert pairs == {("vidA", 902000), ("vidB", 903000)}
    ava_io.write_excluded(tmp_path / "ex2.csv", pairs)
    assert (tmp_path / "ex2.csv").read_text() == "vidA,0902\nvidB,0903\n"
    assert ava_io.read_excluded(tmp_path / "ex2.csv") == pairs
    fl = tmp_path / "train.csv"
    fl.write_text('original_vido_id video_id frame_id path labels\n-5KQ66BBWC4 0 0 -5KQ66BBWC4/-5KQ66BBWC4_000001.jpg ""\n'
                  '-5KQ66BBWC4 0 1 -5KQ66BBWC4/-5KQ66BBWC4_000002.jpg "1,2"\n')
    f = ava_io.read_frame_list(fl)
    assert len(f) == 2 and list(f.frame_id) == [0, 1] and f.path[1].endswith("_000002.jpg")
    ava_io.write_frame_list(tmp_path / "fl2.csv", f)
    g = ava_io.read_frame_list(tmp_path / "fl2.csv")
    for name in ("original_video_id", "video_idx", "frame_id", "path", "labels"):
        np.testing.assert_array_equal(getattr(g, name), getattr(f, name))


# ----------------------------------------------------------------------------- errors, clipping, speed

@pytest.mark.parametrize("text,line,msg", [
    ("v,902,0.1,0.1,0.2,0.2,1\nv,902,0.1,0.1,0.2,1\n", 2, "expected 7 or 8 columns, found 6"),
    ("v,902,0.1,0.1,0.2,0.2,1\n\nv,9o2,0.1,0.1,0.2,0.2,1\n", 3, "timestamp .* not a number"),
    ("v,902,0.1,0.1,0.2,0.2,1\nv,902,0.1,abc,0.2,0.2,1\n", 2, "y1 .* not a number"),
    ("v,902,0.1,0.1,0.2,0.2,1.5\n", 1, "action_id .* not an integer"),
    ("v,902,0.1,0.1,0.2,0.2,1\nv,902,0.1,0.1,0.2,0.2,2\n", 2, "label id 2 .* not in the label map"),
])
def test_errors_name_file_and_line(tmp_path, text, line, msg):
    p = tmp_path / "gt.csv"
    p.write_text(text)
    with pytest.raises(AvaFormatError, match=rf"gt.csv:{line}: {msg}") as e:
        ava_io.read_annotations(p, label_map=ava_io.read_label_map(AVA60))
    assert e.value.line == line


def test_prediction_and_excluded_errors(tmp_path):
    p = tmp_path / "pred.csv"
    p.write_text("v,902,0.1,0.1,0.2,0.2,1,0.5\nv,902,0.1,0.1,0.2,0.2,1,high\n")
    with pytest.raises(AvaFormatError, match=r"pred.csv:2: score"):
        ava_io.read_predictions(p)
    e = tmp_path / "ex.csv"
    e.write_text("v,902\nv\n")
    with pytest.raises(AvaFormatError, match=r"ex.csv:2: expected 2 columns"):
        ava_io.read_excluded(e)


@pytest.mark.parametrize("reader,text,line,msg", [
    ("annotations", "v,902,0.1,0.1,0.2,0.2,1\nv,902,0.1,nan,0.2,0.2,1\n", 2, r"y1 \(column 4\) is nan"),
    ("predictions", "v,902,0.1,0.1,0.2,0.2,1,0.5\nv,902,0.1,0.1,inf,0.2,1,0.5\n", 2, r"x2 \(column 5\) is inf"),
    ("predictions", "v,902,0.1,0.1,0.2,0.2,1,0.5\nv,902,0.1,0.1,0.2,0.2,1,NaN\n", 2, r"score \(column 8\) is nan"),
    ("objects", "v,902,0.1,0.1,0.2,0.2,1,0.5\nv,nan,0.1,0.1,0.2,0.2,1,0.5\n", 2, r"timestamp \(column 2\) is nan"),
    ("proposals_csv", "v,902,0.1,0.1,0.2,0.2,-1,0.5\nv,902,0.1,0.1,0.2,nan,-1,0.5\n", 2, r"y2 \(column 6\) is nan"),
    ("annotations", "v,902,0.1,0.1,0.2,0.2,1\nv,902,0.3,0.1,0.2,0.2,1\n", 2, "inverted box x1=0.3"),
    ("objects", "v,902,0.1,0.1,0.2,0.2,1,0.5\n\nv,902,0.1,0.5,0.2,0.2,1,0.5\n", 3, "inverted box"),
    ("proposals_csv", "v,902,0.1,0.1,0.2,0.2,-1,0.5\nv,903,0.2,0.1,0.1,0.2,-1,0.5\n", 2, "inverted box"),
    ("proposals_csv", "v,902,0.1,0.1,0.2,0.2,-1,0.5\nv,903,0.1,0.1,0.2,0.2,-1\n", 2, "7 columns, but the file's first row has 8"),
    ("predictions", "v,902,0.1,0.1,0.2,0.2,1,3\nv,902,0.1,0.1,0.2,0.2,2,0\n", None, "ground-truth file"),
])
def test_bad_values_are_errors_at_read_time(tmp_path, reader, text, line, msg):
    p = tmp_path / "f.csv"
    p.write_text(text)
    where = "f.csv" if line is None else f"f.csv:{line}"
    with pytest.raises(AvaFormatError, match=rf"{where}: .*{msg}" if line is None else rf"{where}: {msg}"):
        getattr(ava_io, f"read_{reader}")(p)


def test_inverted_prediction_boxes_and_7_column_proposal_files_are_accepted(tmp_path):
    # the official evaluator drops empty/inverted detections after its cap: predictions keep them
    p = tmp_path / "p.csv"
    p.write_text("v,902,0.3,0.1,0.2,0.2,1,0.5\n")
    assert len(ava_io.read_predictions(p)) == 1
    q = tmp_path / "q.csv"  # every row 7 columns: no score column, score 1
    q.write_text("v,902,0.1,0.1,0.2,0.2,-1\nv,903,0.1,0.1,0.2,0.2,-1\n")
    assert ava_io.read_proposals_csv(q).score.tolist() == [1.0, 1.0]


def test_binary_file_is_a_one_line_error(tmp_path):
    p = tmp_path / "model.pyth"
    p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    with pytest.raises(AvaFormatError, match=r"model.pyth: binary data") as e:
        ava_io.read_annotations(p)
    assert "\n" not in str(e.value)
    q = tmp_path / "latin.csv"
    q.write_bytes(b"v\xe9\xff\xfe,902,0.1,0.1,0.2,0.2,1\n" * 10)
    with pytest.raises(AvaFormatError, match=r"latin.csv: not UTF-8"):
        ava_io.read_predictions(q)


def test_clipping_warns_once_per_file(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v,902,-0.01,0.1,1.02,0.5,1\nv,902,0.1,0.1,0.2,1.5,1\nv,903,0.1,0.1,0.2,0.2,1\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = ava_io.read_annotations(p)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "clipped 3 box coordinate" in msgs[0] and "gt.csv" in msgs[0]
    np.testing.assert_array_equal(a.box[:2], np.array([[0, 0.1, 1, 0.5], [0.1, 0.1, 0.2, 1]], np.float32))


def test_fast_reader_parses_like_float_and_the_line_scan(tmp_path):
    # pyarrow's parser must give exactly float(text) (the evaluators' numbers depend on it), and the same
    # table as the line-by-line scan used for files pyarrow refuses
    rng = np.random.default_rng(0)
    n = 3000
    vals = [repr(float(x)) for x in rng.random(n)] + [f"{x:.{int(d)}f}" for x, d in zip(rng.random(n), rng.integers(1, 18, n))]
    vals += ["1e-7", "0.1000000000000000055511151231257827", "9007199254740993", "0.30000001", "-0.0", "5E-324"]
    rows = [f"v{i % 7},{902 + i % 5:04d},{v},0.1,0.9,{v if i % 3 else '0.95'},{1 + i % 3},{v}" for i, v in enumerate(vals)]
    p = tmp_path / "p.csv"
    p.write_text("\n".join(rows) + "\n")
    fast = load_csv(p, (8,), ("video", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"))
    assert fast._lines is None  # the pyarrow path was taken
    want = np.array([float(v) for v in vals])
    assert np.array_equal(fast.col(2), want) and np.array_equal(fast.col(7), want)
    assert np.array_equal(np.signbit(fast.col(2)), np.signbit(want))
    rows_, lines = read_rows(p, (8,))
    slow = _from_rows(p, rows_, lines, 8)
    assert np.array_equal(slow.num, fast.num) and np.array_equal(slow.video, fast.video)
    assert np.array_equal(fast.col(1), [902 + i % 5 for i in range(len(vals))])
