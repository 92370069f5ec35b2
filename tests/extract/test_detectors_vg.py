"""Built-in bottom-up-attention VG detector: checkpoint names, conversion, forward, post-processing."""
import math
import pickle

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.detectors import ObjectDetections, build_object_detector
from stagecache.extract.random_init import RandomWeightsWarning
from stagecache.extract.detectors.vg import (VGDetector, apply_deltas, cell_anchors, grid_anchors, postprocess_vg,
                                  select_objects)
from stagecache.extract.detectors.vg_convert import convert_d2_state, read_d2_checkpoint, to_d2_arrays, write_d2_pickle
from stagecache.extract.detectors.vg_postprocess import FORK_DEMO_NMS, postprocess_fork_demo
from tests.comparisons import assert_informative

torch.set_num_threads(1)
SMALL = dict(min_size=96, max_size=120, rpn_pre_nms_topk=300, rpn_post_nms_topk=6)


def _expected_d2_names() -> set[str]:
    """The detectron2 names of the R-101-C4 VG model written out from the architecture itself."""
    bn = ("weight", "bias", "running_mean", "running_var")
    names = {"backbone.stem.conv1.weight"} | {f"backbone.stem.conv1.norm.{b}" for b in bn}
    for stage, n in (("backbone.res2", 3), ("backbone.res3", 4), ("backbone.res4", 23), ("roi_heads.res5", 3)):
        for i in range(n):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if i == 0 else [])
            for c in convs:
                names.add(f"{stage}.{i}.{c}.weight")
                names |= {f"{stage}.{i}.{c}.norm.{b}" for b in bn}
    for m in ("conv", "objectness_logits", "anchor_deltas"):
        names |= {f"proposal_generator.rpn_head.{m}.weight", f"proposal_generator.rpn_head.{m}.bias"}
    for m in ("cls_score", "bbox_pred", "fc_attr", "attr_score"):
        names |= {f"roi_heads.box_predictor.{m}.weight", f"roi_heads.box_predictor.{m}.bias"}
    names.add("roi_heads.box_predictor.cls_embedding.weight")
    return names


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random-weight checkpoint in the published pickle layout, and the model loaded from it."""
    torch.manual_seed(0)
    with pytest.warns(RandomWeightsWarning):
        src = VGDetector.from_checkpoint(random_init=True, **SMALL)
    sd = src.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():  # non-trivial FrozenBN statistics so that their mapping matters
        if k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "1.weight")) and v.dim() == 1:
            v.copy_(torch.rand(v.shape, generator=g) * 0.5 + 0.25)
    arrays = {k: v.copy() for k, v in to_d2_arrays(sd).items()}
    del src, sd
    path = str(tmp_path_factory.mktemp("vg") / "faster_rcnn_from_caffe_attr.pkl")
    write_d2_pickle(path, arrays)
    with pytest.warns(UserWarning, match="no VG class list"):
        model = build_object_detector("vg", weights=path, score_thresh=0.0, max_objects=5, **SMALL)
    return path, arrays, model


def test_checkpoint_names_match_published_layout(ckpt):
    path, arrays, model = ckpt
    assert set(arrays) == _expected_d2_names()
    shapes = {k: v.shape for k, v in arrays.items()}
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (1601, 2048)
    assert shapes["roi_heads.box_predictor.bbox_pred.weight"] == (6400, 2048)
    assert shapes["roi_heads.box_predictor.cls_embedding.weight"] == (1601, 256)
    assert shapes["roi_heads.box_predictor.fc_attr.weight"] == (512, 2304)
    assert shapes["roi_heads.box_predictor.attr_score.weight"] == (401, 512)
    assert shapes["proposal_generator.rpn_head.conv.weight"] == (512, 1024, 3, 3)
    assert shapes["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert shapes["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert shapes["backbone.res4.22.conv3.weight"] == (1024, 256, 1, 1)
    # the file is the published layout: a pickle dict with "model" -> {name: ndarray}
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert isinstance(raw["model"]["backbone.res2.0.conv1.weight"], np.ndarray)


def test_checkpoint_round_trip(ckpt):
    path, arrays, model = ckpt
    loaded = to_d2_arrays(model.state_dict())
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
    assert model.num_classes == 1600 and model.num_attrs == 400 and not model.random_init
    assert model.class_names[:2] == ["vg_0", "vg_1"]


def test_converter_errors_and_defaults(ckpt):
    path, arrays, model = ckpt
    expected = model.state_dict()
    bad = dict(arrays)
    bad["roi_heads.mask_head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="does not have"):
        convert_d2_state(bad, expected, source="x.pkl")
    bad = dict(arrays)
    bad["roi_heads.box_predictor.cls_score.weight"] = np.zeros((81, 2048), np.float32)
    with pytest.raises(ValueError, match="cls_score.weight has shape"):
        convert_d2_state(bad, expected, source="x.pkl")
    bad = dict(arrays)
    del bad["backbone.res3.1.conv2.weight"]
    with pytest.raises(ValueError, match="res3.1.conv2.weight"):
        convert_d2_state(bad, expected, source="x.pkl")
    # FrozenBN saved without statistics (old conversions): mean 0, var 1; ignored buffers pass.
    old = {k: v for k, v in arrays.items() if not k.endswith(("running_mean", "running_var"))}
    old["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    sd = convert_d2_state(old, expected)
    assert torch.equal(sd["res4.3.bn2.running_var"], torch.ones(256))
    assert torch.equal(sd["stem.1.running_mean"], torch.zeros(64))
    assert read_d2_checkpoint(path).keys() == arrays.keys()


def test_forward_shapes_and_classes(ckpt):
    _, _, model = ckpt
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 72, 90)  # upscaled to 96 x 120 by the detector's resize
    out = model(frames)
    assert len(out) == 2
    for det in out:
        assert isinstance(det, ObjectDetections)
        n = len(det)
        assert 1 <= n <= 5  # score_thresh 0: every proposal qualifies, top 5 kept
        assert det.feature.shape == (n, 2048) and torch.isfinite(det.feature).all()
        assert det.box.shape == (n, 4) and (det.box >= 0).all() and (det.box <= 1).all()
        assert (det.box[:, 2] >= det.box[:, 0]).all() and (det.box[:, 3] >= det.box[:, 1]).all()
        assert ((det.class_id >= 0) & (det.class_id < 1600)).all()
        assert (det.score[:-1] >= det.score[1:]).all()
        assert det.attr_id.shape == (n,) and ((det.attr_id >= 0) & (det.attr_id < 400)).all()
    assert model.feature_dim == 2048 and len(model.class_names) == 1600


def test_proposal_boxes_features_match_features_for_boxes(ckpt):
    _, _, model = ckpt
    torch.manual_seed(1)
    frame = torch.rand(3, 96, 120)  # already at min_size: no resize, pixel boxes map exactly
    model.box_source = "proposal"
    try:
        det = model(frame[None])[0]
    finally:
        model.box_source = "regressed"
    feat = model.features_for_boxes(frame, det.box)
    assert_informative(det.feature, "detector features")
    assert_close(feat, det.feature, rtol=1e-4, atol=1e-4)


def test_reference_select_objects():
    g = torch.Generator().manual_seed(0)
    P, C, t, iou_t = 40, 4, 0.1, 0.3
    scores = torch.softmax(torch.randn(P, C + 1, generator=g) * 2, 1)[:, :-1]
    xy = torch.rand(P, C, 2, generator=g) * 50
    wh = torch.rand(P, C, 2, generator=g) * 30 + 5
    boxes = torch.cat((xy, xy + wh), 2)
    rank, cls, n = select_objects(scores, boxes, score_thresh=t, nms_thresh=iou_t)

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    best = [-1.0] * P
    best_c = [None] * P
    for c in range(C):  # greedy NMS of each class, loop by loop
        cand = sorted([p for p in range(P) if scores[p, c] >= t], key=lambda p: -float(scores[p, c]))
        kept = []
        for p in cand:
            if all(iou(boxes[p, c].tolist(), boxes[q, c].tolist()) <= iou_t for q in kept):
                kept.append(p)
                if scores[p, c] > best[p]:
                    best[p], best_c[p] = float(scores[p, c]), c
    ok = [b >= 0 for b in best]
    assert n == sum(ok) and 0 < n < P
    for p in range(P):
        if ok[p]:
            assert math.isclose(float(rank[p]), best[p], rel_tol=1e-6) and int(cls[p]) == best_c[p]
        else:
            assert float(rank[p]) < 0  # ranks below every surviving proposal
            assert int(cls[p]) == int(scores[p].argmax())


def test_postprocess_top_k_and_fill():
    g = torch.Generator().manual_seed(3)
    P, C = 30, 6
    logits = torch.randn(P, C + 1, generator=g) * 3
    props = torch.rand(P, 2, generator=g) * 60
    props = torch.cat((props, props + 10 + torch.rand(P, 2, generator=g) * 30), 1)
    deltas = torch.randn(P, C * 4, generator=g) * 0.1
    feats = torch.randn(P, 8, generator=g)
    kw = dict(score_thresh=0.3, nms_thresh=0.3, box_source="proposal")
    full = postprocess_vg(props, logits, deltas, feats, None, (100, 100), max_objects=P, min_objects=0, **kw)
    scores = torch.softmax(logits, 1)[:, :-1]
    assert len(full) > 3 and (full.score >= 0.3).all()
    assert (full.score[:-1] >= full.score[1:]).all()
    # every kept object's feature is its proposal's feature, box the proposal's box
    idx = [int(torch.nonzero((feats == f).all(1))[0]) for f in full.feature]
    assert_close(full.box, props[idx] / 100)
    assert_close(full.score, scores[idx, full.class_id])
    top3 = postprocess_vg(props, logits, deltas, feats, None, (100, 100), max_objects=3, min_objects=0, **kw)
    assert_close(top3.score, full.score[:3]) and torch.equal(top3.class_id, full.class_id[:3])
    many = postprocess_vg(props, logits, deltas, feats, None, (100, 100), max_objects=P, min_objects=len(full) + 4,
                          **kw)
    assert len(many) == len(full) + 4
    assert_close(many.score[: len(full)], full.score)  # fill-ins come after all kept objects


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _fork_demo_reference(scores, boxes, score_thresh, max_objects, schedule=(0.5, 0.6, 0.7, 0.8, 0.9)):
    """py-bottom-up-attention's demo, loop by loop: pairs scoring > score_thresh, greedy NMS in each
    class, all survivors by decreasing score, the first max_objects; the IoU raised 0.5 .. 0.9 until
    that many survive. Returns [(proposal, class)] and the IoU used."""
    P, C = scores.shape
    for iou_t in schedule:
        kept = []
        for c in range(C):
            cand = sorted([p for p in range(P) if scores[p, c] > score_thresh], key=lambda p: -float(scores[p, c]))
            mine = []
            for p in cand:
                if all(_iou(boxes[p, c].tolist(), boxes[q, c].tolist()) <= iou_t for q in mine):
                    mine.append(p)
            kept += [(p, c) for p in mine]
        kept = sorted(kept, key=lambda pc: -float(scores[pc]))[:max_objects]
        if len(kept) == max_objects:
            break
    return kept, iou_t


def test_fork_demo_postprocess_matches_reference():
    g = torch.Generator().manual_seed(5)
    P, C = 40, 5
    logits = torch.randn(P, C + 1, generator=g) * 1.5
    logits[:, 0] += 1.0  # two strong classes: many proposals hold both above the threshold
    logits[:, 1] += 1.0
    xy = torch.rand(P, 2, generator=g) * 40
    props = torch.cat((xy, xy + 20 + torch.rand(P, 2, generator=g) * 20), 1)
    deltas = torch.zeros(P, C * 4)
    feats = torch.randn(P, 8, generator=g)
    attr = torch.randn(P, 7, generator=g)
    scores = torch.softmax(logits, 1)[:, :-1]
    boxes = props[:, None, :].expand(-1, C, 4)
    t = 0.2
    at_05, _ = _fork_demo_reference(scores, boxes, t, P * C, schedule=(0.5,))
    for k, expect_iou in ((5, 0.5), (len(at_05) + 2, None)):  # the second needs a looser NMS than 0.5
        ref, used = _fork_demo_reference(scores, boxes, t, k)
        p_ref = [p for p, _ in ref]
        if expect_iou is not None:
            assert used == expect_iou
        else:  # the escalation is exercised, and a proposal is kept with two classes
            assert used > 0.5 and len(ref) == k and len(set(p_ref)) < len(p_ref)
        det = postprocess_fork_demo(props, logits, deltas, feats, attr, (100, 100), score_thresh=t, max_objects=k,
                                    box_source="proposal")
        assert_informative(det.score, "fork-demo scores", min_len=5)
        assert det.class_id.tolist() == [c for _, c in ref]
        assert_close(det.score, torch.stack([scores[pc] for pc in ref]))
        assert_close(det.feature, feats[p_ref])
        assert_close(det.box, props[p_ref] / 100)
        assert torch.equal(det.attr_id, attr[p_ref, :-1].argmax(1))
    assert FORK_DEMO_NMS == (0.5, 0.6, 0.7, 0.8, 0.9)
    # through the detector: the option by name; min_objects (the Caffe fill-in) is refused with it
    with pytest.raises(ValueError, match="fill"):
        VGDetector(vg_postprocess="fork-demo", min_objects=2, **SMALL)
    with pytest.raises(ValueError, match="valid"):
        VGDetector(vg_postprocess="demo", **SMALL)


def test_vg_postprocess_option(tmp_path):
    from stagecache.extract.detectors.job import DetectionsArgs

    kw = dict(video_dir=str(tmp_path), out_dir=str(tmp_path / "out"), timestamps="1:2", objects="vg")
    assert DetectionsArgs(**kw).vg_postprocess == "caffe"
    assert DetectionsArgs(**kw, vg_postprocess="fork-demo").vg_postprocess == "fork-demo"
    with pytest.raises(ValueError, match="fill"):
        DetectionsArgs(**kw, vg_postprocess="fork-demo", min_objects=3)


def test_apply_deltas_matches_reference_and_anchors():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 16.0, 32.0]])
    deltas = torch.randn(2, 8, generator=g)
    deltas[0, 2] = 20.0  # exercises the log(1000/16) clamp
    w = (10.0, 10.0, 5.0, 5.0)
    out = apply_deltas(deltas, boxes, w)
    for i in range(2):
        x1, y1, x2, y2 = boxes[i].tolist()
        bw, bh = x2 - x1, y2 - y1
        for k in range(2):
            dx, dy, dw, dh = (deltas[i, 4 * k + j].item() / w[j] for j in range(4))
            dw, dh = min(dw, math.log(1000 / 16)), min(dh, math.log(1000 / 16))
            cx, cy = x1 + bw / 2 + dx * bw, y1 + bh / 2 + dy * bh
            pw, ph = math.exp(dw) * bw, math.exp(dh) * bh
            ref = torch.tensor([cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2])
            assert_close(out[i, 4 * k: 4 * k + 4], ref, rtol=1e-5, atol=1e-3)
    cell = cell_anchors((64, 128), (0.5, 1.0, 2.0))
    assert cell.shape == (6, 4)
    w0, h0 = math.sqrt(64 * 64 / 0.5), 0.5 * math.sqrt(64 * 64 / 0.5)
    assert_close(cell[0], torch.tensor([-w0 / 2, -h0 / 2, w0 / 2, h0 / 2]))
    assert_close(cell[4], torch.tensor([-64.0, -64.0, 64.0, 64.0]))  # size 128, ratio 1
    grid = grid_anchors(cell, 3, 5, 16)
    for y in range(3):
        for x in range(5):
            for a in range(6):
                assert_close(grid[(y * 5 + x) * 6 + a], cell[a] + torch.tensor([16.0 * x, 16 * y, 16 * x, 16 * y]))


def test_random_init_requires_flag_and_warns():
    with pytest.raises(ValueError, match="random_init=True"):
        build_object_detector("vg")
    with pytest.raises(KeyError, match="valid names"):
        build_object_detector("yolo")


def test_precomputed_boxes_get_features_from_vg_head(ckpt, tmp_path):
    """Boxes-only bottom-up-attention TSV: the built-in head pools their features."""
    import base64
    _, _, model = ckpt
    boxes_px = np.array([[10, 20, 60, 90], [0, 0, 96, 64]], np.float32)
    row = ["vid_x_0902", "120", "96", "2", base64.b64encode(boxes_px.tobytes()).decode(), ""]
    p = tmp_path / "boxes.tsv"
    p.write_text("\t".join(row) + "\n")
    with pytest.warns(UserWarning, match="no VG class list"):
        det = build_object_detector("precomputed", path=str(p), feature_extractor=model)
    assert det.feature_dim == 2048
    torch.manual_seed(2)
    frames = torch.rand(1, 3, 96, 120)
    out = det(frames, [("vid_x", 902.0)])[0]
    norm = torch.from_numpy(boxes_px / np.array([120, 96, 120, 96], np.float32))
    assert_close(out.box, norm)
    assert_close(out.feature, model.features_for_boxes(frames[0], norm))
    assert out.feature.abs().sum() > 0
