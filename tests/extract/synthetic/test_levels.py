"""The roi / temporal / context levels of the feature-level synthetic store."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from stagecache.extract.store import open_store
from stagecache.extract.synthetic import (OBJECT_CLASSES, feature_codes, make_feature_store, simulate_video, video_arrays,
                               video_tables)
from stagecache.extract.synthetic.levels import context_codes, coverage, scene_maps, temporal_level, temporal_offsets

ALL = ("roi", "temporal", "context")


def reference_coverage(box, grid):
    """Loop over cells: area of (grown box) & cell, over the cell's area."""
    out = np.zeros((len(box), grid, grid))
    for n, (x1, y1, x2, y2) in enumerate(np.asarray(box, np.float64)):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = max((x2 - x1) / 2, 0.5 / grid), max((y2 - y1) / 2, 0.5 / grid)
        for i in range(grid):  # rows: y
            for j in range(grid):  # columns: x
                ox = max(0.0, min(cx + hw, (j + 1) / grid) - max(cx - hw, j / grid))
                oy = max(0.0, min(cy + hh, (i + 1) / grid) - max(cy - hh, i / grid))
                out[n, i, j] = ox * oy * grid * grid
    return out


def test_coverage_matches_reference_and_grows_small_boxes():
    box = np.array([[0.1, 0.2, 0.45, 0.9], [0.5, 0.5, 0.51, 0.52], [0.0, 0.0, 1.0, 1.0], [0.93, 0.1, 0.99, 0.4]])
    cov = coverage(box, 8)
    assert_close(torch.from_numpy(cov), torch.from_numpy(reference_coverage(box, 8)).float())
    # A box smaller than a cell still counts as one whole cell of area.
    assert cov[1].sum() == pytest.approx(1.0, abs=1e-5)
    assert_close(torch.from_numpy(cov[2]), torch.ones(8, 8))


def test_scene_maps_match_a_loop_reference_without_noise():
    rng = np.random.default_rng(0)
    a_kf, o_kf = np.array([0, 0, 2]), np.array([1, 2])
    a_box = np.array([[0.1, 0.1, 0.3, 0.5], [0.2, 0.3, 0.6, 0.9], [0.7, 0.0, 0.9, 0.4]], np.float32)
    o_box = np.array([[0.4, 0.4, 0.45, 0.44], [0.0, 0.8, 0.2, 1.0]], np.float32)
    a_feat = rng.standard_normal((3, 5)).astype(np.float32)
    o_code = rng.standard_normal((2, 5)).astype(np.float32)
    maps = scene_maps(3, 6, a_kf, a_box, a_feat, o_kf, o_box, o_code, rng, map_noise=0.0)
    ref = np.zeros((3, 5, 6, 6))
    cov_a, cov_o = reference_coverage(a_box, 6), reference_coverage(o_box, 6)
    # Each box's weights peak at 1 (a small object lights its cell fully).
    cov_a /= cov_a.max(axis=(1, 2), keepdims=True)
    cov_o /= cov_o.max(axis=(1, 2), keepdims=True)
    for n, k in enumerate(a_kf):
        ref[k] += a_feat[n][:, None, None] * cov_a[n][None]
    for n, k in enumerate(o_kf):
        ref[k] += o_code[n][:, None, None] * cov_o[n][None]
    assert_close(maps, torch.from_numpy(ref).float())


def test_levels_change_none_of_the_other_arrays():
    plain = video_arrays(3, "train", 1, 6)
    full = video_arrays(3, "train", 1, 6, levels=ALL)
    assert plain["levels"] == {}
    for k, v in plain["base"].items():
        np.testing.assert_array_equal(v, full["base"][k], err_msg=k)
    np.testing.assert_array_equal(plain["pooled"], full["pooled"])
    a = full["pooled"].shape[0]
    assert full["levels"]["actor_roi"].shape == (a, 64, 7, 7)
    assert full["levels"]["actor_temporal"].shape == (a, 8, 64)
    assert full["levels"]["kf_context"].shape == (6, 64, 16, 16)


def test_temporal_tokens_show_the_pose_of_each_second():
    # noise=0: token - id_scale * identity is exactly the pose code of the pose at t + offset.
    v = simulate_video(5, 2, 10, split="train")
    tab = video_tables(v)
    pose_code, _ = feature_codes(16, 8)
    identity = np.zeros((v.num_actors, 16), np.float32)
    tok = temporal_level(v, tab["actor_kf"], tab["actor_person"], identity, pose_code, steps=8, id_scale=0.5,
                         noise_scale=0.0, rng=np.random.default_rng(0))  # (A, 8, 16)
    pose = (tok @ pose_code.T).argmax(-1)  # (A, 8)
    t = v.keyframe_times[tab["actor_kf"]]
    off = temporal_offsets(8)
    np.testing.assert_array_equal(off, [-0.875, -0.625, -0.375, -0.125, 0.125, 0.375, 0.625, 0.875])
    prev = v.poses_at(t - 1)[np.arange(len(t)), tab["actor_person"]]
    nxt = v.poses_at(t + 1)[np.arange(len(t)), tab["actor_person"]]
    np.testing.assert_array_equal(pose[:, 0], prev)
    np.testing.assert_array_equal(pose[:, 1], prev)
    for j in range(2, 6):
        np.testing.assert_array_equal(pose[:, j], tab["actor_pose"])
    np.testing.assert_array_equal(pose[:, 7], nxt)
    assert (prev != tab["actor_pose"]).any()  # the test would catch offsets that ignore time


def test_roi_and_context_see_the_scene():
    va = video_arrays(0, "train", 4, 12, levels=ALL, proposals=False)
    tab = video_tables(simulate_video(0, 4, 12, split="train"))
    roi = torch.from_numpy(va["levels"]["actor_roi"]).mean(dim=(2, 3))  # (A, C)
    feat = torch.from_numpy(va["pooled"])
    # Each actor's RoI map is dominated by the actor itself: its own feature is the most similar one
    # among the actors of its keyframe.
    sim = torch.nn.functional.normalize(roi, dim=1) @ torch.nn.functional.normalize(feat, dim=1).T
    same_kf = torch.from_numpy(tab["actor_kf"][:, None] == tab["actor_kf"][None, :])
    best = sim.masked_fill(~same_kf, -2).argmax(1)
    assert (best == torch.arange(len(best))).float().mean() > 0.9
    # The context cell under an object carries its class code more than the average cell does.
    ctx = torch.from_numpy(va["levels"]["kf_context"])  # (K, C, 16, 16)
    codes = torch.from_numpy(context_codes(len(OBJECT_CLASSES), 64))
    hits = []
    for k, c, (x, y) in zip(tab["object_kf"], tab["object_class"], tab["object_centre"]):
        cell = ctx[k, :, min(int(y * 16), 15), min(int(x * 16), 15)]
        hits.append(float(cell @ codes[c]) > float(ctx[k].mean(dim=(1, 2)) @ codes[c]))
    assert np.mean(hits) > 0.9


def test_proposals_follow_their_source(tmp_path):
    va = video_arrays(1, "val", 0, 8, levels=ALL)
    base, temp = va["base"], va["levels"]["actor_temporal"]
    gt = np.nonzero(base["actor_is_gt"])[0]
    jit = np.nonzero(~base["actor_is_gt"] & (base["actor_score"] > 0.5))[0]
    assert len(jit) == len(gt)
    # Jittered copies are listed in GT order: the i-th copy is the i-th GT row's detection.
    d_same = np.linalg.norm(temp[jit] - temp[gt], axis=(1, 2))
    d_other = np.linalg.norm(temp[jit] - np.roll(temp[gt], 1, axis=0), axis=(1, 2))
    assert (d_same < d_other).mean() > 0.9


def test_store_with_levels(tmp_path):
    p = make_feature_store(tmp_path / "s.zarr", split="train", seed=0, n_videos=2, keyframes_per_video=4,
                           actor_dim=16, object_dim=8, levels=["context", "roi", "temporal"], context_size=4,
                           roi_size=3, temporal_steps=5)
    s = open_store(str(p))
    info = s.array_info("synthetic")
    a, k = s.num_actors, s.num_keyframes
    assert info["actor_roi"][0] == (a, 16, 3, 3)
    assert info["actor_temporal"][0] == (a, 5, 16)
    assert info["kf_context"][0] == (k, 16, 4, 4)
    assert s.groups["synthetic"]["levels"] == ["pooled", "context", "roi", "temporal"]
    t = s.load({"synthetic": ["actor_roi", "kf_context"]})
    assert torch.isfinite(t.data["synthetic/actor_roi"].float()).all()
    with pytest.raises(ValueError, match="unknown level.*valid: roi, temporal, context"):
        make_feature_store(tmp_path / "t.zarr", split="train", seed=0, n_videos=1, keyframes_per_video=2,
                           levels=["flow"])
