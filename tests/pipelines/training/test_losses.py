"""--pose-ids against the loss and the store's classes (`losses.check_pose_ids`), and train-head
refusing pose ids its store lacks before anything is written."""
from __future__ import annotations

import warnings

import pytest

from stagecache.pipelines.training import losses
from stagecache.pipelines.training.losses import PoseIdsError, check_pose_ids


def test_pose_ids_none_of_which_is_a_class_are_refused():
    with pytest.raises(PoseIdsError, match=r"--pose-ids 99: none is a class of store s.zarr \(3 classes, ids 1,2,3\)"):
        check_pose_ids("pose_softmax", [99], [1, 2, 3], "s.zarr")
    with pytest.raises(PoseIdsError, match="needs --pose-ids"):
        check_pose_ids("pose_softmax", [], [1, 2, 3], "s.zarr")


def test_pose_ids_partly_outside_the_store_are_ignored_with_a_warning():
    # AVA's "1-14" on the 60-class list, which has no id 2: the softmax covers the others
    with pytest.warns(UserWarning, match=r"--pose-ids 2 are not classes of store s.zarr: ignored; the softmax covers 1,3"):
        check_pose_ids("pose_softmax", [1, 2, 3], [1, 3, 4], "s.zarr")
    assert losses.pose_columns([1, 3, 4], [1, 2, 3]).tolist() == [0, 1]  # what training then uses


def test_pose_ids_without_pose_softmax_are_said_to_be_unused():
    with pytest.warns(UserWarning, match="only --loss pose_softmax uses them"):
        check_pose_ids("bce", [1, 2], [1, 2, 3], "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pose_ids("bce", [], [1, 2, 3], "s.zarr")
        check_pose_ids("pose_softmax", [1, 2], [1, 2, 3], "s.zarr")
