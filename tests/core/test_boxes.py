import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.core.boxes import BOX_SETS, box_iou, box_iou_torch, check_box_set, select_actors

# Hand-computed: [0,0,2,2] vs [1,1,3,3]: inter 1, union 4 + 4 - 1 = 7; vs [2,0,4,2]: touching, 0;
# vs itself 1; a zero-area box against itself has an empty union: 0 (not NaN).
A = [[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
B = [[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
WANT = [[1 / 7, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def test_box_iou_numpy_hand_computed():
    iou = box_iou(np.array(A), np.array(B))
    assert iou.dtype == np.float64 and iou.shape == (2, 4)
    np.testing.assert_array_equal(iou, np.array(WANT))
    assert box_iou(np.array(A), np.array(B), dtype=np.float32).dtype == np.float32


def test_box_iou_torch_matches_hand_computed_and_numpy():
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    assert_close(box_iou_torch(a, b), torch.tensor(WANT, dtype=torch.float64), rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(6, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g, dtype=torch.float64)], dim=1)
    assert_close(box_iou_torch(boxes, boxes), torch.from_numpy(box_iou(boxes.numpy(), boxes.numpy())))


def test_select_actors():
    is_gt = np.array([True, False, False, True])
    score = np.array([1.0, 0.95, 0.5, 1.0])
    assert select_actors(is_gt, score, boxes="gt", score_threshold=0.9).tolist() == [True, False, False, True]
    assert select_actors(is_gt, score, boxes="proposals", score_threshold=0.9).tolist() == [False, True, False, False]
    assert select_actors(is_gt, score, boxes="gt+proposals", score_threshold=0.9).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="valid"):
        select_actors(is_gt, score, boxes="all", score_threshold=0.9)


def test_check_box_set_names_the_field_and_the_choices():
    assert [check_box_set(b) for b in BOX_SETS] == list(BOX_SETS)
    with pytest.raises(ValueError, match=r"unknown val_boxes 'all'; valid: gt, proposals, gt\+proposals"):
        check_box_set("all", "val_boxes")
