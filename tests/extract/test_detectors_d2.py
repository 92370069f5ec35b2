"""detectron2 paths: a clear install message without it; with py-bottom-up-attention's detectron2 fork
(airsplay/py-bottom-up-attention, checked at commit 85ec9b7), the same objects as the built-in model.

The fork tests run where the fork is installed and STAGECACHE_VG_D2_CONFIG names its
configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml (README, "Objects"); elsewhere they
skip, saying so."""
import importlib.util
import os
import warnings

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.detectors import build_object_detector, build_person_detector
from tests.comparisons import assert_informative

torch.set_num_threads(1)
HAVE_D2 = importlib.util.find_spec("detectron2") is not None
FORK = "airsplay/py-bottom-up-attention (commit 85ec9b7)"
MIN_OBJECTS = 5  # each side must find this many objects before the two are compared
# Both sides: input already at the test's size (no resize), few proposals, 10 objects at most.
POST = dict(score_thresh=0.2, max_objects=10)
RPN_POST_NMS = 50


@pytest.mark.skipif(HAVE_D2, reason="detectron2 is installed")
def test_missing_detectron2_says_how_to_install(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("MODEL: {}\n")
    for build, name in ((build_person_detector, "detectron2"), (build_object_detector, "vg-detectron2")):
        with pytest.raises(ImportError, match="pip install 'git\\+https://github.com/facebookresearch/detectron2"):
            build(name, config=str(cfg), weights=str(cfg))


@pytest.fixture(scope="module")
def vg_pair(tmp_path_factory):
    """A random-weight VG checkpoint (published pickle layout) and the built-in model loaded from it."""
    pytest.importorskip("detectron2")
    from stagecache.extract.detectors.vg import VGDetector
    from stagecache.extract.detectors.vg_convert import to_d2_arrays, write_d2_pickle

    torch.manual_seed(0)
    small = dict(min_size=96, max_size=120, rpn_pre_nms_topk=300, rpn_post_nms_topk=6, score_thresh=0.0,
                 max_objects=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = VGDetector.from_checkpoint(random_init=True, caffe_maxpool=False, **small)
        path = str(tmp_path_factory.mktemp("d2") / "faster_rcnn_from_caffe_attr.pkl")
        write_d2_pickle(path, {k: v.copy() for k, v in to_d2_arrays(src.state_dict()).items()})
    return path, src, small


def test_backbone_matches_detectron2_resnet(vg_pair):
    """Plain detectron2 ResNet-101 (stride in 1x1, FrozenBN) with the same weights -> same res4."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    path, model, _ = vg_pair
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 101
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    bb = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    from stagecache.extract.detectors.vg_convert import read_d2_checkpoint
    arrays = read_d2_checkpoint(path)
    sd = {k[len("backbone."):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("backbone.")}
    missing, unexpected = bb.load_state_dict(sd, strict=False)
    assert not unexpected and all("num_batches" in m for m in missing)
    x = torch.randn(1, 3, 96, 120) * 50
    with torch.no_grad():
        a, b = model.backbone(x), bb(x)["res4"]
    assert_informative(a[0].flatten(1).T, "built-in res4 (rows: positions)")
    assert_close(a, b, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------- the fork

def test_fork_told_from_upstream_by_its_config_keys():
    from stagecache.extract.detectors.d2 import is_vg_fork

    upstream = {"MODEL": {"RESNETS": {"DEPTH": 50}, "ROI_BOX_HEAD": {"NAME": ""}}}
    fork = {"MODEL": {"CAFFE_MAXPOOL": False, "ROI_BOX_HEAD": {"NAME": "", "RES5HALVE": True}}}
    assert is_vg_fork(fork) and not is_vg_fork(upstream)
    assert not is_vg_fork({"MODEL": {"CAFFE_MAXPOOL": False, "ROI_BOX_HEAD": {}}})


def _fork_config() -> str:
    """The fork's VG config file, or a skip naming the fork. The fork is told from upstream detectron2
    by its own config keys (it registers no VG-specific class: its VG changes live in Res5ROIHeads)."""
    if not HAVE_D2:
        pytest.skip(f"needs {FORK}'s detectron2 fork; detectron2 is not installed")
    from detectron2.config import get_cfg
    from stagecache.extract.detectors.d2 import VG_FORK_KEYS, is_vg_fork

    if not is_vg_fork(get_cfg()):
        pytest.skip(f"needs {FORK}'s detectron2 fork: the installed detectron2 has no {' / '.join(VG_FORK_KEYS)} "
                    "config keys (upstream detectron2?)")
    config = os.environ.get("STAGECACHE_VG_D2_CONFIG")
    if not config:
        pytest.skip(f"set STAGECACHE_VG_D2_CONFIG to {FORK}'s "
                    "configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml")
    return config


def _random_images(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 3, h, w) preprocessed images (BGR [0, 255] minus the pixel mean) of uniform noise."""
    from stagecache.extract.detectors.vg import PIXEL_MEAN_BGR

    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 255.0 - torch.tensor(PIXEL_MEAN_BGR).view(1, 3, 1, 1)


@torch.no_grad()
def _surviving_weights(model) -> None:
    """Random weights under which detections survive and differ from proposal to proposal.

    Plain random weights compare nothing: res4 grows to ~1e6 and the RPN deltas to ~1e5, so every
    proposal is degenerate and both models return no objects. Here each residual branch is damped
    (the FrozenBN scale of a block's last layer x0.2), the RPN deltas are small, and the classifier
    and attribute layers are centred on the pooled features of a calibration image and scaled by
    their spread, with a few classes favoured so that scores pass the 0.2 threshold.
    """
    g = torch.Generator().manual_seed(1)
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("running_var"):  # non-trivial FrozenBN statistics, so that their mapping matters
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        if k.endswith("bn3.weight"):
            v.mul_(0.2)
    sd["rpn_head.anchor_deltas.weight"].mul_(0.01)
    images = _random_images(240, 320, seed=99)
    feat = model.backbone(images)
    x = model.box_features(feat, model.proposals(feat, tuple(images.shape[-2:])))
    mu, spread = x.mean(0), x.std(0).mean()
    bp = model.box_predictor

    def centred(layer, gain: float) -> None:
        w = torch.randn(layer.weight.shape, generator=g) * gain / (spread * x.shape[1] ** 0.5)
        layer.weight.copy_(w)
        layer.bias.copy_(-w[:, : x.shape[1]] @ mu)

    centred(bp.cls_score, 1.0)
    # Three favoured classes share most of the probability: a proposal can hold two of them above
    # 0.2, which is where the Caffe and the demo post-processing part ways.
    bp.cls_score.bias[torch.randperm(bp.cls_score.out_features - 1, generator=g)[:3]] += 7.0
    centred(bp.bbox_pred, 0.3)
    if bp.num_attrs > 0:
        centred(bp.fc_attr, 3.0)


@pytest.fixture(scope="module", params=[True, False], ids=["attr", "no-attr"])
def fork_pair(request, tmp_path_factory):
    """(built-in model, the fork's model through `vg-detectron2`, checkpoint path, attributes on)."""
    config = _fork_config()
    from stagecache.extract.detectors.vg import VGDetector
    from stagecache.extract.detectors.vg_convert import to_d2_arrays, write_d2_pickle

    attrs = request.param
    torch.manual_seed(0)
    kw = dict(min_size=240, max_size=1000, rpn_post_nms_topk=RPN_POST_NMS, **POST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = VGDetector.from_checkpoint(random_init=True, num_attrs=400 if attrs else 0, **kw)
        _surviving_weights(src)
        path = str(tmp_path_factory.mktemp("fork") / "vg.pkl")
        write_d2_pickle(path, {k: v.copy() for k, v in to_d2_arrays(src.state_dict()).items()})
        ours = VGDetector.from_checkpoint(weights=path, **kw)
        theirs = _fork_detector(config, path, attrs)
    return ours, theirs, config, path, attrs


def _fork_detector(config: str, path: str, attrs: bool, **kw):
    opts = ["MODEL.RPN.POST_NMS_TOPK_TEST", RPN_POST_NMS, "MODEL.ROI_BOX_HEAD.ATTR", attrs]
    return build_object_detector("vg-detectron2", config=config, weights=path, min_size=240, max_size=1000,
                                 opts=opts, **POST, **kw)


def _assert_same_objects(a, b, attrs: bool, what: str) -> None:
    for side, det in ((f"{what}: built-in", a), (f"{what}: fork", b)):
        assert len(det) >= MIN_OBJECTS, f"{side} found {len(det)} objects, need {MIN_OBJECTS} to compare"
        assert_informative(det.score, f"{side} scores", above=1e-6)
        assert_informative(det.box, f"{side} boxes", above=1e-5)
        assert_informative(det.feature, f"{side} features", above=1e-3)
    assert_close(a.box, b.box, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.class_id, b.class_id)
    assert_close(a.score, b.score, rtol=1e-4, atol=1e-6)
    assert_close(a.feature, b.feature, rtol=1e-4, atol=1e-3)
    if attrs:
        assert_informative(a.attr_id, f"{what}: built-in attribute ids")
        assert torch.equal(a.attr_id, b.attr_id)
        assert_close(a.attr_score, b.attr_score, rtol=1e-4, atol=1e-6)
    else:
        assert a.attr_id is None and b.attr_id is None


@pytest.mark.parametrize("hw", [(240, 320), (251, 333)], ids=["240x320", "251x333"])
def test_full_vg_matches_detectron2_fork(fork_pair, hw):
    """Same boxes, classes, scores, attributes and features as the fork's modules, Caffe post-processing."""
    ours, theirs, _, _, attrs = fork_pair
    images = _random_images(*hw, seed=hw[0])
    with torch.no_grad():
        a, b = ours.detect(images)[0], theirs.detect(images)[0]
    _assert_same_objects(a, b, attrs, f"caffe {hw}")


@torch.no_grad()
def _fork_demo_objects(model, images: torch.Tensor, *, score_thresh: float, max_objects: int) -> dict:
    """The objects of py-bottom-up-attention's feature-extraction demo notebooks, step by step with the
    fork's own functions (its model's `forward` fails under the attribute config: its box predictor
    returns three values)."""
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputs, fast_rcnn_inference_single_image
    from detectron2.structures import ImageList

    hw = tuple(images.shape[-2:])
    feats = model.backbone(images)
    proposals, _ = model.proposal_generator(ImageList(images, [hw]), feats, None)
    heads = model.roi_heads
    pooled = heads._shared_roi_transform([feats[f] for f in heads.in_features],
                                         [p.proposal_boxes for p in proposals]).mean(dim=[2, 3])
    pred = heads.box_predictor(pooled)
    out = FastRCNNOutputs(heads.box2box_transform, pred[0], pred[-1], proposals, heads.smooth_l1_beta)
    probs, boxes = out.predict_probs()[0], out.predict_boxes()[0]
    for nms_thresh in np.arange(0.5, 1.0, 0.1):
        inst, ids = fast_rcnn_inference_single_image(boxes, probs, hw, score_thresh=score_thresh,
                                                     nms_thresh=nms_thresh, topk_per_image=max_objects)
        if len(ids) == max_objects:
            break
    res = {"box": inst.pred_boxes.tensor / torch.tensor([hw[1], hw[0], hw[1], hw[0]]), "score": inst.scores,
           "class_id": inst.pred_classes, "feature": pooled[ids], "proposal": ids}
    if len(pred) == 3:
        res["attr_score"], res["attr_id"] = pred[1][ids, :-1].softmax(-1).max(-1)
    return res


def test_fork_demo_postprocess_matches_fork_demo(fork_pair):
    """`vg_postprocess="fork-demo"` (built-in and through detectron2) keeps the (proposal, class) pairs
    the fork's demo keeps."""
    ours, _, config, path, attrs = fork_pair
    from stagecache.extract.detectors.vg import VGDetector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_demo = VGDetector.from_checkpoint(weights=path, min_size=240, max_size=1000,
                                               rpn_post_nms_topk=RPN_POST_NMS, vg_postprocess="fork-demo", **POST)
        theirs_demo = _fork_detector(config, path, attrs, vg_postprocess="fork-demo")
    images = _random_images(251, 333, seed=7)
    ref = _fork_demo_objects(theirs_demo.model, images, **POST)
    with torch.no_grad():
        a, b = ours_demo.detect(images)[0], theirs_demo.detect(images)[0]
    assert len(ref["proposal"]) >= MIN_OBJECTS
    assert_informative(ref["score"], "fork demo scores")
    for det, what in ((a, "built-in fork-demo"), (b, "vg-detectron2 fork-demo")):
        assert len(det) == len(ref["score"]), what
        assert_close(det.box, ref["box"], rtol=1e-4, atol=1e-5)
        assert torch.equal(det.class_id, ref["class_id"]), what
        assert_close(det.score, ref["score"], rtol=1e-4, atol=1e-6)
        assert_close(det.feature, ref["feature"], rtol=1e-4, atol=1e-3)
        if attrs:
            assert torch.equal(det.attr_id, ref["attr_id"]), what
            assert_close(det.attr_score, ref["attr_score"], rtol=1e-4, atol=1e-6)
    # What sets the demo apart is exercised: one proposal kept twice (two classes), which the Caffe
    # post-processing of the same image never does.
    proposals = ref["proposal"].tolist()
    assert len(set(proposals)) < len(proposals), f"no proposal kept twice: {proposals}"
    caffe = ours.detect(images)[0]
    assert len(caffe) >= MIN_OBJECTS and len(torch.unique(caffe.feature, dim=0)) == len(caffe)
