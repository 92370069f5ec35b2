"""Person detectors: torchvision Faster R-CNN (random weights), filtering, precomputed, CSV round trip."""
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.detectors import (PERSON_DETECTORS, Detections, NoObjectDetector, build_object_detector,
                               build_person_detector)
from stagecache.extract.detectors._common import filter_people
from stagecache.extract.random_init import RandomWeightsWarning

torch.set_num_threads(1)
SMALL = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=40)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference_filter(box, score, label, person, thr, iou_t, k):
    idx = sorted([i for i in range(len(score)) if label[i] == person and score[i] >= thr], key=lambda i: -score[i])
    kept = []
    for i in idx:
        if all(_iou(box[i], box[j]) <= iou_t for j in kept):
            kept.append(i)
    return kept[:k]


def test_filter_people_matches_reference():
    g = torch.Generator().manual_seed(0)
    n = 60
    xy = torch.rand(n, 2, generator=g) * 80
    box = torch.cat((xy, xy + 10 + torch.rand(n, 2, generator=g) * 40), 1)
    score = torch.rand(n, generator=g)
    label = torch.randint(1, 4, (n,), generator=g)
    d = filter_people(box, score, label, person_label=1, width=200, height=100, score_thresh=0.3,
                      nms_thresh=0.4, max_per_frame=7)
    ref = _reference_filter(box.tolist(), score.tolist(), label.tolist(), 1, 0.3, 0.4, 7)
    assert 2 <= len(ref) == len(d)
    assert_close(d.score, score[ref])
    assert_close(d.box, (box[ref] / torch.tensor([200.0, 100, 200, 100])).clamp(0, 1))  # clipped to the frame
    assert (d.class_id == 1).all()


@pytest.fixture(scope="module")
def tv_detector():
    torch.manual_seed(0)
    with pytest.warns(RandomWeightsWarning):
        det = build_person_detector("torchvision", random_init=True, score_thresh=0.0, nms_thresh=0.5,
                                    max_per_frame=10, **SMALL)
    # Random weights put every box in a few arbitrary classes; tilt the classifier towards COCO's
    # person (and keep the rest random) so that the person filter has varied scores to work on.
    with torch.no_grad():
        cls = det.model.roi_heads.box_predictor.cls_score
        cls.weight.mul_(0.02)
        cls.bias.zero_()
        cls.bias[1] = 4.0
    return det


def test_torchvision_person_random_weights(tv_detector):
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 64, 80)
    with pytest.warns(RandomWeightsWarning, match="RANDOMLY INITIALISED"):
        out = tv_detector(frames)
    assert len(out) == 2
    for d in out:
        assert isinstance(d, Detections) and 1 <= len(d) <= 10
        assert (d.class_id == 1).all() and (d.box >= 0).all() and (d.box <= 1).all()
        assert (d.score[:-1] >= d.score[1:]).all()
        b = d.box.tolist()
        assert all(_iou(b[i], b[j]) <= 0.5 + 1e-6 for i in range(len(b)) for j in range(i))
    # a higher threshold keeps exactly the detections scoring above it
    base = out[0]
    assert len(base) >= 5
    thr = float(base.score[3] + base.score[4]) / 2  # between two scores: robust to batch-size jitter
    tv_detector.score_thresh = thr
    try:
        with pytest.warns(RandomWeightsWarning):
            high = tv_detector(frames[:1])[0]
    finally:
        tv_detector.score_thresh = 0.0
    assert len(high) == 4 and (high.score >= thr).all()
    assert_close(high.score, base.score[:4], rtol=1e-4, atol=1e-5)
    assert_close(high.box, base.box[:4], rtol=1e-4, atol=1e-5)


def test_torchvision_person_weights_file(tv_detector, tmp_path):
    p = tmp_path / "fasterrcnn_resnet50_fpn_v2_coco.pth"
    torch.save(tv_detector.model.state_dict(), p)
    det = build_person_detector("torchvision", weights=str(p), **SMALL)
    for (k, v), (k2, v2) in zip(det.model.state_dict().items(), tv_detector.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"backbone.body.conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        build_person_detector("torchvision", weights=str(bad), **SMALL)
    with pytest.raises(ValueError, match="random_init=True"):
        build_person_detector("torchvision")


def test_registry_errors():
    with pytest.raises(KeyError, match="valid names"):
        build_person_detector("yolo")
    assert set(PERSON_DETECTORS) == {"torchvision", "detectron2", "precomputed"}
    det = build_object_detector("none")
    assert isinstance(det, NoObjectDetector)
    out = det(torch.rand(3, 3, 8, 8))
    assert len(out) == 3 and out[0].feature.shape == (0, 0)


def test_proposals_csv_round_trip_and_precomputed(tv_detector, tmp_path):
    ava_io = pytest.importorskip("stagecache.extract.ava_io")
    torch.manual_seed(1)
    frames = torch.rand(2, 3, 64, 80)
    with pytest.warns(RandomWeightsWarning):
        dets = tv_detector(frames)
    keys = [("vid-A_1", 902.0), ("vid-A_1", 903.0)]
    props = ava_io.Proposals(np.array([k[0] for k, d in zip(keys, dets) for _ in range(len(d))]),
                             np.array([k[1] for k, d in zip(keys, dets) for _ in range(len(d))]),
                             torch.cat([d.box for d in dets]).numpy(), torch.cat([d.score for d in dets]).numpy())
    path = tmp_path / "proposals.csv"
    ava_io.write_proposals_csv(str(path), props)
    back = ava_io.read_proposals(str(path))
    order = np.lexsort((-back.score, back.timestamp))
    np.testing.assert_array_equal(back.box[order], props.box)
    np.testing.assert_array_equal(back.score[order], props.score)
    # the precomputed detector gives them back by (video, timestamp)
    pre = build_person_detector("precomputed", path=str(path), score_thresh=0.0)
    got = pre(None, [keys[1], ("other", 902.0), keys[0]])
    assert_close(got[0].box, dets[1].box) and assert_close(got[2].score, dets[0].score)
    assert len(got[1]) == 0 and pre.missing == [("other", 902000)]
    thr = float(dets[0].score.median())
    pre2 = build_person_detector("precomputed", path=str(path), score_thresh=thr, max_per_frame=2)
    g = pre2(None, [keys[0]])[0]
    assert len(g) == min(2, int((dets[0].score >= thr).sum())) and (g.score >= thr).all()


def test_person_weights_file_through_safe_pickle(tmp_path):
    """Person weights go through the restricted loader: a file that would build another global is
    refused (nothing runs), a truncated or missing file is a one-line UserError naming it."""
    from datetime import date

    from stagecache.extract.detectors.person import load_state_dict_file
    from stagecache.core.errors import UserError

    evil = tmp_path / "evil.pth"
    torch.save({"model": {"made": date(2020, 1, 1)}}, evil)
    with pytest.raises(UserError, match=r"evil\.pth: refusing to unpickle a datetime\.date"):
        load_state_dict_file(str(evil))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(UserError, match=r"cut\.pth: not a readable torch file"):
        load_state_dict_file(str(cut))
    with pytest.raises(UserError, match="weights file not found"):
        load_state_dict_file(str(tmp_path / "missing.pth"))
