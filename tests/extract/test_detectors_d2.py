"""detectron2 paths: a clear install message without it; where it exists, the same numbers as built-in."""
import importlib.util
import os
import warnings

import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.detectors import build_object_detector, build_person_detector

torch.set_num_threads(1)
HAVE_D2 = importlib.util.find_spec("detectron2") is not None


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
        assert_close(model.backbone(x), bb(x)["res4"], rtol=1e-4, atol=1e-3)


def test_full_vg_matches_detectron2_fork(vg_pair):
    """With py-bottom-up-attention's detectron2 (VG modules registered) and its config file given in
    STAGECACHE_VG_D2_CONFIG: same boxes, classes, scores and features as the built-in model."""
    from detectron2.modeling import ROI_HEADS_REGISTRY

    if "Res5ROIHeadsForVGStride" not in ROI_HEADS_REGISTRY or not os.environ.get("STAGECACHE_VG_D2_CONFIG"):
        pytest.skip("needs py-bottom-up-attention's detectron2 and STAGECACHE_VG_D2_CONFIG")
    path, _, small = vg_pair
    from stagecache.extract.detectors.vg import VGDetector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = VGDetector.from_checkpoint(weights=path, **small)
        theirs = build_object_detector(
            "vg-detectron2", config=os.environ["STAGECACHE_VG_D2_CONFIG"], weights=path, min_size=96, max_size=120,
            score_thresh=0.0, max_objects=5, opts=["MODEL.RPN.PRE_NMS_TOPK_TEST", 300, "MODEL.RPN.POST_NMS_TOPK_TEST", 6,
                                                   "MODEL.CAFFE_MAXPOOL", True])
    images = ours.preprocess(torch.rand(1, 3, 96, 120))
    with torch.no_grad():
        a, b = ours.detect(images)[0], theirs.detect(images)[0]
    assert_close(a.box, b.box, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.class_id, b.class_id)
    assert_close(a.score, b.score, rtol=1e-4, atol=1e-5)
    assert_close(a.feature, b.feature, rtol=1e-4, atol=1e-3)
