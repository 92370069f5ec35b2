"""Label rules and flat tables of the synthetic AVA-format dataset.

One simulation (`simulate_world`) feeds both the video renderer (`extract/synthetic/video.py`) and
the feature-level store (`extract/synthetic/store.py`), so both carry the same labels. The scenes
it tabulates (timeline, actors, objects, poses) are drawn in `extract/synthetic/scene.py`.

Label map (`LABEL_IDS` / `LABEL_NAMES`, groups in `GROUPS`) and rules, at each keyframe t for each
present actor (distances between the centres of the float32 boxes as written, normalised):
- 1 "stand", 2 "sit", 3 "lie": the pose at t (exactly one per actor-keyframe).
- 4 "hold cup": the nearest object is within `r_obj` (0.15) and is a cup.
- 5 "ride bike": the nearest object is within `r_obj` and is a bike.
- 6 "talk to": another actor present at t is within `r_act` (0.2).
- 7 "get up": t - 1 is a keyframe of the same video, the actor is present at both t - 1 and t,
  its pose at t - 1 was sit or lie and at t is stand.
Groups: {"pose": [1, 2, 3], "person-object": [4, 5], "person-person": [6], "temporal": [7]}.

Excluded timestamps: a few keyframes (`exclude_frac` of them, at least one when there are >= 4
keyframes) are flagged in `World.kf_excluded`; the video dataset leaves their GT out of the
annotation CSV and lists them in the excluded-timestamps CSV, as AVA does. The feature-level store
ignores the flag (it keeps every keyframe).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stagecache.extract.synthetic.scene import BIKE, CUP, FIRST_KEYFRAME, STAND, VideoSim, simulate_video, split_code

LABEL_IDS: list[int] = [1, 2, 3, 4, 5, 6, 7]
LABEL_NAMES: list[str] = ["stand", "sit", "lie", "hold cup", "ride bike", "talk to", "get up"]
GROUPS: dict[str, list[int]] = {
    "pose": [1, 2, 3],
    "person-object": [4, 5],
    "person-person": [6],
    "temporal": [7],
}
R_OBJ = 0.15  # person-object nearness radius (box-centre distance, normalised)
R_ACT = 0.2  # person-person nearness radius


def label_rules(
    actor_centre: np.ndarray,
    present: np.ndarray,
    pose: np.ndarray,
    object_centre: np.ndarray,
    object_class: np.ndarray,
    *,
    r_obj: float = R_OBJ,
    r_act: float = R_ACT,
) -> np.ndarray:
    """The label rules on one video's keyframe grid.

    actor_centre (T, Na, 2), present (T, Na) bool, pose (T, Na), object_centre (T, No, 2),
    object_class (No,), keyframes consecutive seconds. Returns (T, Na, 7) bool in `LABEL_IDS`
    order (rows of absent actors are all False).
    """
    T, na = present.shape
    lab = np.zeros((T, na, len(LABEL_IDS)), dtype=bool)
    lab[..., 0:3] = pose[..., None] == np.arange(3)
    if object_centre.shape[1]:
        d = np.linalg.norm(actor_centre[:, :, None] - object_centre[:, None], axis=-1)  # (T, Na, No)
        nearest = d.argmin(-1)
        near = np.take_along_axis(d, nearest[..., None], -1)[..., 0] < r_obj
        cls = object_class[nearest]
        lab[..., 3] = near & (cls == CUP)
        lab[..., 4] = near & (cls == BIKE)
    dd = np.linalg.norm(actor_centre[:, :, None] - actor_centre[:, None], axis=-1)  # (T, Na, Na)
    other = present[:, None, :] & ~np.eye(na, dtype=bool)[None]
    lab[..., 5] = ((dd < r_act) & other).any(-1)
    lab[1:, :, 6] = present[:-1] & (pose[:-1] != STAND) & (pose[1:] == STAND)
    lab &= present[..., None]
    return lab


@dataclass
class World:
    """Flat keyframe / actor / object tables (ordered by video, time; actors by person_id)."""

    video_names: list[str]
    videos: list[VideoSim]
    kf_video: np.ndarray  # (K,) int64 index into video_names
    kf_time: np.ndarray  # (K,) float64 AVA seconds
    kf_excluded: np.ndarray  # (K,) bool
    actor_kf: np.ndarray  # (A,) int64
    actor_person: np.ndarray  # (A,) int64 person_id within the video
    actor_centre: np.ndarray  # (A, 2) float64 centre of actor_box (the rules use these)
    actor_box: np.ndarray  # (A, 4) float32
    actor_pose: np.ndarray  # (A,) int64 pose index (label id - 1)
    actor_labels: np.ndarray  # (A, 7) bool, LABEL_IDS order
    object_kf: np.ndarray  # (O,) int64
    object_id: np.ndarray  # (O,) int64 object index within the video
    object_centre: np.ndarray  # (O, 2) float64 centre of object_box
    object_box: np.ndarray  # (O, 4) float32
    object_class: np.ndarray  # (O,) int64 index into OBJECT_CLASSES

    @property
    def num_keyframes(self) -> int:
        return self.kf_video.shape[0]

    @property
    def num_actors(self) -> int:
        return self.actor_kf.shape[0]

    @property
    def num_objects(self) -> int:
        return self.object_kf.shape[0]


def _centres(box: np.ndarray) -> np.ndarray:
    b = box.astype(np.float64)
    return np.stack(((b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2), axis=-1)


def video_tables(v: VideoSim, *, r_obj: float = R_OBJ, r_act: float = R_ACT) -> dict[str, np.ndarray]:
    """One video's flat keyframe tables (keyframe index local to the video)."""
    t = v.keyframe_times
    T, na, no = t.shape[0], v.num_actors, v.num_objects
    pose = v.poses_at(t)  # (T, Na)
    # The rules use the centres of the stored (clipped, float32) boxes: exactly what a head sees.
    abox = v.actor_boxes(v.actor_centres(t), pose).astype(np.float32)  # (T, Na, 4)
    obox = v.object_boxes(v.object_centres(t)).astype(np.float32)  # (T, No, 4)
    ac = _centres(abox)  # (T, Na, 2)
    oc = _centres(obox)  # (T, No, 2)
    lab = label_rules(ac, v.present, pose, oc, v.object_class, r_obj=r_obj, r_act=r_act)
    keep = v.present.reshape(-1)
    kf_grid = np.repeat(np.arange(T), na)
    return {
        "actor_kf": kf_grid[keep],
        "actor_person": np.tile(np.arange(na), T)[keep],
        "actor_centre": ac.reshape(-1, 2)[keep],
        "actor_box": abox.reshape(-1, 4)[keep],
        "actor_pose": pose.reshape(-1)[keep],
        "actor_labels": lab.reshape(-1, len(LABEL_IDS))[keep],
        "object_kf": np.repeat(np.arange(T), no),
        "object_id": np.tile(np.arange(no), T),
        "object_centre": oc.reshape(-1, 2),
        "object_box": obox.reshape(-1, 4),
        "object_class": np.tile(v.object_class, T),
    }


def simulate_world(
    seed: int,
    n_videos: int,
    keyframes_per_video: int,
    *,
    split: str = "train",
    first_video: int = 0,
    r_obj: float = R_OBJ,
    r_act: float = R_ACT,
    p_pose_change: float = 0.3,
    p_hold: float = 0.7,
    drop_prob: float = 0.03,
    exclude_frac: float = 0.03,
) -> World:
    """Simulate `n_videos` videos (`syn_<first_video>`, ...) with `keyframes_per_video` keyframes."""
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    if keyframes_per_video < 1:
        raise ValueError(f"keyframes_per_video must be >= 1, got {keyframes_per_video}")
    if first_video < 0:
        raise ValueError(f"first_video must be >= 0, got {first_video}")
    videos = [
        simulate_video(seed, first_video + i, keyframes_per_video, split=split,
                       p_pose_change=p_pose_change, p_hold=p_hold, drop_prob=drop_prob)
        for i in range(n_videos)
    ]
    parts = [video_tables(v, r_obj=r_obj, r_act=r_act) for v in videos]
    T = keyframes_per_video
    for i, p in enumerate(parts):  # local keyframe index -> global
        p["actor_kf"] = p["actor_kf"] + i * T
        p["object_kf"] = p["object_kf"] + i * T
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    K = n_videos * T
    excluded = np.zeros(K, dtype=bool)
    n_ex = int(round(exclude_frac * K))
    if K >= 4:
        n_ex = max(1, n_ex)
    if n_ex:
        ex_rng = np.random.default_rng([int(seed), split_code(split), int(first_video), 7])
        excluded[ex_rng.choice(K, size=n_ex, replace=False)] = True
    return World(
        video_names=[v.name for v in videos], videos=videos,
        kf_video=np.repeat(np.arange(n_videos, dtype=np.int64), T),
        kf_time=np.tile(FIRST_KEYFRAME + np.arange(T, dtype=np.float64), n_videos),
        kf_excluded=excluded, **cat,
    )


def label_rates(world: World) -> dict[int, float]:
    """Positive rate of each label id over actor-keyframes."""
    return {lid: float(world.actor_labels[:, j].mean()) for j, lid in enumerate(LABEL_IDS)}


def simulate_proposals(
    seed: int,
    split: str,
    index: int,
    actor_kf: np.ndarray,
    actor_box: np.ndarray,
    num_keyframes: int,
    *,
    fp_rate: float = 0.5,
) -> dict[str, np.ndarray]:
    """Person proposals of one video, as a detector would give them on a val split.

    Every GT box is detected once, jittered (centre shift ~5% of its size, size x exp(N(0, 0.05)))
    with a score in (0.5, 1]; false positives (Poisson(`fp_rate`) per keyframe, random boxes) get
    scores in [0.02, 0.4). Rows ordered by keyframe, jittered GT first (in GT order), then false
    positives. Returns kf (P,), box (P, 4) float32, score (P,) float32, source (P,) GT row in the
    video's tables or -1 for a false positive.
    """
    rng = np.random.default_rng([int(seed), split_code(split), int(index), 2])
    n = actor_kf.shape[0]
    box = actor_box.astype(np.float64)
    wh = box[:, 2:] - box[:, :2]
    c = (box[:, :2] + box[:, 2:]) / 2 + rng.normal(0, 0.05, (n, 2)) * wh
    wh = wh * np.exp(rng.normal(0, 0.05, (n, 2)))
    jit = np.concatenate((c - wh / 2, c + wh / 2), 1)
    jit_score = 1.0 - rng.uniform(0.0, 0.5, n)  # (0.5, 1]

    n_fp = rng.poisson(fp_rate, num_keyframes)
    m = int(n_fp.sum())
    fp_kf = np.repeat(np.arange(num_keyframes), n_fp)
    fc = rng.uniform(0.1, 0.9, (m, 2))
    fhw = np.stack((rng.uniform(0.05, 0.2, m), rng.uniform(0.1, 0.3, m)), 1)  # (w, h)
    fp = np.concatenate((fc - fhw / 2, fc + fhw / 2), 1)
    fp_score = rng.uniform(0.02, 0.4, m)

    kf = np.concatenate((actor_kf, fp_kf))
    order = np.argsort(kf, kind="stable")  # GT rows come first within each keyframe
    return {
        "kf": kf[order].astype(np.int64),
        "box": np.clip(np.concatenate((jit, fp)), 0.0, 1.0).astype(np.float32)[order],
        "score": np.concatenate((jit_score, fp_score)).astype(np.float32)[order],
        "source": np.concatenate((np.arange(n), np.full(m, -1)))[order].astype(np.int64),
    }
