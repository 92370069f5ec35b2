"""Readers of bottom-up-attention TSV and npz outputs, and the image-id convention."""
import base64

import numpy as np
import pytest
import torch

from stagecache.extract.detectors import build_object_detector
from stagecache.extract.detectors.precomputed import parse_image_id


def _b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def _image(rng, n, d=16):
    box = np.sort(rng.uniform(0, 100, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    return box, rng.standard_normal((n, d)).astype(np.float32)


def test_parse_image_id():
    assert parse_image_id("vid_x_0902") == ("vid_x", 902.0)
    assert parse_image_id("-5KQ66BBWC4_0902.5") == ("-5KQ66BBWC4", 902.5)
    assert parse_image_id("vid/0903.jpg") == ("vid", 903.0)
    assert parse_image_id("root/vid_y/0904") == ("vid_y", 904.0)
    with pytest.raises(ValueError, match="not a number"):
        parse_image_id("vid_abc")
    with pytest.raises(ValueError, match="neither"):
        parse_image_id("novideo")


@pytest.mark.parametrize("variant", ["caffe", "lxmert", "header"])
def test_tsv_reader(tmp_path, variant):
    rng = np.random.default_rng(0)
    (b1, f1), (b2, f2) = _image(rng, 3), _image(rng, 2)
    cls2, conf2 = np.array([5, 7], np.int64), np.array([0.4, 0.9], np.float32)
    if variant == "caffe":
        rows = [["vidA_0902", "200", "100", "3", _b64(b1), _b64(f1)],
                ["vid_B_0903", "200", "100", "2", _b64(b2), _b64(f2)]]
    else:
        rows = [["vidA_0902", "100", "200", _b64(np.zeros(3, np.int64)), _b64(np.ones(3, np.float32)), "", "",
                 "3", _b64(b1), _b64(f1)],
                ["vid_B_0903", "100", "200", _b64(cls2), _b64(conf2), "", "", "2", _b64(b2), _b64(f2)]]
    lines = ["\t".join(r) for r in rows]
    if variant == "header":
        lines.insert(0, "\t".join(["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id",
                                   "attrs_conf", "num_boxes", "boxes", "features"]))
    p = tmp_path / "feats.tsv"
    p.write_text("\n".join(lines) + "\n")
    det = build_object_detector("precomputed", path=str(p), class_names=["a"] * 10)
    assert det.feature_dim == 16
    out = det(None, [("vid_B", 903.0), ("vidA", 902.0), ("vidA", 905.0)])
    scale = np.array([200, 100, 200, 100], np.float32)
    o = out[0]
    if variant == "caffe":
        np.testing.assert_allclose(o.box.numpy(), b2 / scale, rtol=1e-6)
        np.testing.assert_array_equal(o.feature.numpy(), f2)
        assert (o.class_id == -1).all() and (o.score == 1).all()
    else:  # sorted by objects_conf
        np.testing.assert_allclose(o.box.numpy(), b2[::-1] / scale, rtol=1e-6)
        np.testing.assert_array_equal(o.feature.numpy(), f2[::-1])
        np.testing.assert_array_equal(o.class_id.numpy(), [7, 5])
    np.testing.assert_array_equal(out[1].feature.numpy(), f1)
    assert len(out[2]) == 0 and out[2].feature.shape == (0, 16) and det.missing == [("vidA", 905000)]


def test_tsv_bad_row_names_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("vidA_0902\t200\t100\t3\tnotbase64!\t\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: field boxes is not base64"):
        build_object_detector("precomputed", path=str(p), class_names=["a"])
    p.write_text("vidA_0902\t200\t100\t3\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: 4 tab-separated fields"):
        build_object_detector("precomputed", path=str(p), class_names=["a"])


def test_npz_reader(tmp_path):
    rng = np.random.default_rng(1)
    (b1, f1), (b2, f2) = _image(rng, 4), _image(rng, 3)
    d = tmp_path / "npz"
    (d / "vidA").mkdir(parents=True)
    info = {"objects_id": np.array([3, 1, 2, 0]), "objects_conf": np.array([0.5, 0.9, 0.1, 0.7], np.float32)}
    np.savez_compressed(d / "vidA" / "0902.npz", x=f1, bbox=b1, num_bbox=4, image_h=100, image_w=200, info=info)
    np.savez_compressed(d / "vid_B_0903.npz", x=f2.T, bbox=b2, num_bbox=3, image_h=50, image_w=50)
    det = build_object_detector("precomputed", path=str(d), max_objects=3, score_thresh=0.2, class_names=["c"] * 4)
    a, b = det(None, [("vidA", 902.0), ("vid_B", 903.0)])
    order = [1, 3, 0]  # conf 0.9, 0.7, 0.5; 0.1 is below the threshold
    np.testing.assert_array_equal(a.class_id.numpy(), [1, 0, 3])
    np.testing.assert_array_equal(a.feature.numpy(), f1[order])
    np.testing.assert_allclose(a.box.numpy(), np.clip(b1[order] / [200, 100, 200, 100], 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(b.feature.numpy(), f2)  # stored transposed (D, N)
    single = build_object_detector("precomputed", path=str(d / "vid_B_0903.npz"), class_names=["c"])
    assert torch.equal(single(None, [("vid_B", 903.0)])[0].feature, b.feature)
    with pytest.raises(ValueError, match="needs keys"):
        det(torch.zeros(1, 3, 4, 4))
    # Features in the file: no frames needed; a keyframe absent from it is recorded as missing.
    assert det.needs_frames is False and list(det.missing) == []
    assert len(det(None, [("vidA", 905.0)])[0]) == 0
    assert list(det.missing) == [("vidA", 905000)]


@pytest.mark.parametrize("what", ["x", "bbox", "info_ids"])
def test_npz_with_an_object_array_is_one_error_naming_the_file(tmp_path, what):
    from stagecache.core.errors import UserError

    box, feat = _image(np.random.default_rng(2), 2)
    arrays = dict(x=feat, bbox=box, num_bbox=2, image_h=100, image_w=100)
    if what == "info_ids":  # objects_id that is not one number per box
        arrays["info"] = {"objects_id": np.array(["a", "b"], dtype=object), "objects_conf": np.ones(2, np.float32)}
    else:  # numpy writes an object array as a pickle: never unpickled, refused
        arrays[what] = np.array([None, 1], dtype=object)
    path = tmp_path / "vid_0902.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=str(path)) as e:  # when the detector is built (it checks its files) or run
        build_object_detector("precomputed", path=str(path), class_names=["c"] * 4)(None, [("vid", 902.0)])
    assert "\n" not in str(e.value)
