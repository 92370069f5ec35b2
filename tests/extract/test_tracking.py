import numpy as np
import pytest

from stagecache.core.boxes import box_iou
from stagecache.extract.tracking import track_boxes, write_tracks


def scene():
    """Synthetic people moving over keyframes t = 0..9 (1 Hz) of video 0, plus video 1.

    p0 walks right and p1 walks left on overlapping rows: they cross around t = 4.5.
    p2 is born at t = 3 and dies after t = 6; p3 is missed by the detector at t = 5 only.
    Video 1 has a box identical to p0's at t = 0.
    """
    rows = []  # (video, time, person, box)
    for t in range(10):
        x0 = 0.1 + 0.06 * t
        rows.append((0, t, 0, [x0, 0.10, x0 + 0.25, 0.60]))
        x1 = 0.75 - 0.06 * t
        rows.append((0, t, 1, [x1, 0.30, x1 + 0.25, 0.80]))
        if 3 <= t <= 6:
            rows.append((0, t, 2, [0.02, 0.70, 0.12, 0.95]))
        if t != 5:
            rows.append((0, t, 3, [0.85, 0.02 + 0.01 * t, 0.98, 0.30 + 0.01 * t]))
    rows.append((1, 0, 4, [0.1, 0.10, 0.35, 0.60]))
    rows.append((1, 1, 4, [0.12, 0.10, 0.37, 0.60]))
    return rows


def to_arrays(rows, seed=0):
    """Shuffle keyframe order and rows within keyframes; return the tracker inputs + person ids."""
    rng = np.random.default_rng(seed)
    kfs = sorted({(v, t) for v, t, _, _ in rows})
    rng.shuffle(kfs)
    kf_index = {kf: i for i, kf in enumerate(kfs)}
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    kf_video = np.array([v for v, _ in kfs])
    kf_time = np.array([float(t) for _, t in kfs])
    actor_kf = np.array([kf_index[(v, t)] for v, t, _, _ in rows])
    box = np.array([b for *_, b in rows], np.float32)
    person = np.array([p for _, _, p, _ in rows])
    return kf_video, kf_time, actor_kf, box, person


def partition(ids, person):
    """Tracks as sets of person ids, and person ids as sets of tracks."""
    return ({int(t): set(person[ids == t].tolist()) for t in np.unique(ids)},
            {int(p): set(ids[person == p].tolist()) for p in np.unique(person)})


def test_crossing_births_deaths_and_gaps():
    rows = scene()
    box_at = {(v, t, p): b for v, t, p, b in rows}
    # p0 and p1 do overlap at the crossing (more than the IoU threshold).
    assert box_iou(np.array(box_at[0, 5, 0]), np.array(box_at[0, 5, 1]))[0, 0] > 0.3
    kf_video, kf_time, actor_kf, box, person = to_arrays(rows)
    ids = track_boxes(kf_video, kf_time, actor_kf, box)
    by_track, by_person = partition(ids, person)
    assert all(len(p) == 1 for p in by_track.values())  # no track mixes two people
    assert len(by_person[0]) == 1 and len(by_person[1]) == 1  # identities kept through the crossing
    assert len(by_person[2]) == 1  # birth at t=3, death after t=6: one track
    assert len(by_person[3]) == 2  # missed at t=5: the 1 s gap rule starts a new track
    assert by_person[4].isdisjoint(by_person[0])  # another video never continues a track
    # A longer max_gap bridges the missed detection.
    ids2 = track_boxes(kf_video, kf_time, actor_kf, box, max_gap=2.0)
    _, by_person2 = partition(ids2, person)
    assert len(by_person2[3]) == 1 and len(by_person2[0]) == 1
    # Ids are 0..n-1 and independent of the input order.
    assert sorted(np.unique(ids).tolist()) == list(range(len(np.unique(ids))))
    kv, kt, akf, b, p = to_arrays(rows, seed=5)
    _, by_person3 = partition(track_boxes(kv, kt, akf, b), p)
    assert [len(by_person3[i]) for i in range(5)] == [len(by_person[i]) for i in range(5)]


def test_hungarian_beats_greedy_and_threshold():
    # Greedy matching (best IoU first) would give track A new[0] and leave B unmatched (B does
    # not overlap new[1]); the assignment maximising total IoU links both.
    prev = [[0.30, 0.0, 0.60, 1.0], [0.10, 0.0, 0.40, 1.0]]  # A, B
    new = [[0.25, 0.0, 0.55, 1.0], [0.40, 0.0, 0.70, 1.0]]
    iou = box_iou(np.array(prev), np.array(new))
    assert iou.argmax() == 0 and iou[1, 1] == 0 and iou[0, 1] + iou[1, 0] > iou[0, 0]
    ids = track_boxes([0, 0], [0.0, 1.0], [0, 0, 1, 1], np.array(prev + new), iou_threshold=0.3)
    assert ids[3] == ids[0] and ids[2] == ids[1] and ids[0] != ids[1]
    # Below the IoU threshold nothing links.
    ids = track_boxes([0, 0], [0.0, 1.0], [0, 1], np.array([[0, 0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]))
    assert ids[0] != ids[1]
    # Groups (GT vs detections) never link to each other, even with identical boxes.
    ids = track_boxes([0, 0], [0.0, 1.0], [0, 0, 1, 1], np.array([[0, 0, 0.5, 0.5]] * 4),
                      actor_group=[1, 0, 0, 1])
    assert ids[3] == ids[0] and ids[2] == ids[1] and ids[0] != ids[1]
    with pytest.raises(ValueError, match="actor_kf"):
        track_boxes([0], [0.0], [1], np.zeros((1, 4)))


def test_write_tracks_to_store(tmp_path):
    from stagecache.extract.store import StoreWriter, open_store

    rows = scene()
    path = str(tmp_path / "store")
    with StoreWriter(path, split="val", label_ids=[1, 2], label_names=["a", "b"]) as w:
        w.declare_group("base", {"source": "test"})
        for v in (0, 1):
            rv = sorted((r for r in rows if r[0] == v), key=lambda r: r[1])
            times = sorted({r[1] for r in rv})
            n = len(rv)
            w.add_video("base", f"vid{v}", timestamps=np.array(times, float),
                        actor_counts=np.array([sum(r[1] == t for r in rv) for t in times]),
                        object_counts=np.zeros(len(times), np.int64),
                        arrays={"actor_box": np.array([r[3] for r in rv], np.float32),
                                "actor_score": np.ones(n, np.float32), "actor_is_gt": np.zeros(n, bool),
                                "actor_labels": np.zeros((n, 2), np.uint8),
                                "actor_track": np.array([r[2] for r in rv]),
                                "object_box": np.zeros((0, 4), np.float32),
                                "object_class": np.zeros(0, np.int64), "object_score": np.zeros(0, np.float32)})
    ids = write_tracks(path)
    st = open_store(path)
    assert st.groups["tracks"]["tracker"] == "iou_hungarian"
    tab = st.load({"tracks": ["actor_track"], "base": ["actor_track"]})
    stored = tab.data["tracks/actor_track"].numpy()
    np.testing.assert_array_equal(stored, ids)
    _, by_person = partition(stored, tab.data["base/actor_track"].numpy())
    assert [len(by_person[i]) for i in range(5)] == [1, 1, 1, 2, 1]
