"""evaluate --dataset jhmdb|ucf24 against tube_reference.py (MOC's frameAP / BuildTubes / videoAP
structure) on random detector-style cases (tube_cases.py), both protocols: per-class frame AP and
video AP at 0.2 / 0.5 / 0.75 and 0.5:0.95 equal to 1e-9."""
import warnings

import numpy as np
import pytest

from stagecache.pipelines.evaluation.tubes import evaluate_split
from stagecache.pipelines.evaluation.tubes_frame import frame_dets

from . import tube_reference
from .tube_cases import FPS, random_case


def _rows(gt, videos, pred):
    det = frame_dets(gt, videos, pred, fps=FPS, source="case")
    return [(str(det.video[i]), int(det.frame[i]), int(det.label[i]), det.score[i], det.box[i])
            for i in range(len(det.score))]


@pytest.mark.parametrize("protocol", ["moc", "act"])
@pytest.mark.parametrize("seed", range(12))
def test_random_cases_equal_the_reference(seed, protocol):
    gt, videos, pred = random_case(seed, ucf=seed % 3 == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = _rows(gt, videos, pred)
        r = evaluate_split(gt, 1, pred, fps=FPS, protocol=protocol)
    fap, vap, all_ = tube_reference.evaluate(gt, videos, rows, protocol)
    np.testing.assert_allclose(r.frame_ap, fap, atol=1e-9, rtol=0)
    for t in (0.2, 0.5, 0.75):
        np.testing.assert_allclose(r.video_ap[t], vap[t], atol=1e-9, rtol=0)
    np.testing.assert_allclose(r.video_ap_050_095, all_, atol=1e-9, rtol=0)
    assert np.isfinite(r.frame_ap).all() and r.frame_map > 0
