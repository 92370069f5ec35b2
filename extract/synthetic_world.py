"""Scene simulation and label rules of the synthetic AVA-format dataset.

One simulation (`simulate_world`) feeds both the video renderer (`extract/synthetic_video.py`) and
the feature-level store (`extract/synthetic_store.py`), so both carry the same labels.

Timeline
--------
A video of `S = keyframes_per_video + 3` seconds covers AVA seconds [900, 900 + S) (like the
trimmed 15-minute AVA clips, which start at second 900): video time (seconds from the first frame)
= AVA timestamp - 900. Keyframes are the integer seconds 902, 903, ..., 900 + S - 2, i.e. at least
2 s of video before the first keyframe and after the last. Scene state is continuous in time
(actors and objects move along analytic trajectories); the pose is a per-second state (pose at
time s is the pose of second round(s)).

Scene
-----
Videos `syn_000`, `syn_001`, ... (the global video index `first_video + i`). Each video is drawn
from its own generator `np.random.default_rng([seed, crc32(split), index])`, so a video does not
depend on how many videos are generated with it, and train/val differ even with the same seed.
- 2-5 actors (`person_id` 0..n-1, persistent identity). Centre = clip(c + two sinusoids per axis,
  0.12, 0.88): smooth motion. Box size depends on pose and a per-actor scale (stand: tall and
  thin, sit: shorter, lie: wide and flat).
- 3-8 objects of `OBJECT_CLASSES` = ["cup", "bike", "phone", "chair"] (class ids 0..3). With
  probability `p_hold` an object is *carried* by one actor during one interval [t0, t1]: its centre
  is holder_centre(clip(t, t0, t1)) + offset, i.e. static where it is picked up / dropped and
  moving with the actor in between. Other objects are static or drift slowly. Objects of every
  class thus appear both near and far from actors.
- Every keyframe has all objects; each actor is present except for occasional drop-out
  (probability `drop_prob` per actor-keyframe; never all actors of a keyframe).
- Pose: Markov chain per actor over seconds; each second the pose changes with probability
  `p_pose_change` to one of the two other poses, uniformly.

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

import zlib
from dataclasses import dataclass

import numpy as np

LABEL_IDS: list[int] = [1, 2, 3, 4, 5, 6, 7]
LABEL_NAMES: list[str] = ["stand", "sit", "lie", "hold cup", "ride bike", "talk to", "get up"]
GROUPS: dict[str, list[int]] = {
    "pose": [1, 2, 3],
    "person-object": [4, 5],
    "person-person": [6],
    "temporal": [7],
}
OBJECT_CLASSES: list[str] = ["cup", "bike", "phone", "chair"]
POSES: list[str] = ["stand", "sit", "lie"]  # pose index p <-> label id p + 1
STAND, SIT, LIE = 0, 1, 2
R_OBJ = 0.15  # person-object nearness radius (box-centre distance, normalised)
R_ACT = 0.2  # person-person nearness radius
CUP, BIKE, PHONE, CHAIR = 0, 1, 2, 3

VIDEO_START = 900.0  # AVA second of the first frame
FIRST_KEYFRAME = 902  # AVA second of the first keyframe
MARGIN_SECONDS = 2  # video before the first and after the last keyframe

# (height, width) of actor boxes per pose, before the per-actor scale.
POSE_BOX_HW = np.array([[0.30, 0.10], [0.20, 0.13], [0.10, 0.28]], dtype=np.float64)
# (height, width) of object boxes per class.
OBJECT_BOX_HW = np.array([[0.05, 0.04], [0.10, 0.14], [0.04, 0.03], [0.11, 0.08]], dtype=np.float64)
OBJECT_CLASS_PROBS = np.array([0.35, 0.30, 0.20, 0.15])


def video_name(index: int) -> str:
    return f"syn_{index:03d}"


def split_code(split: str) -> int:
    """Stable integer for a split name (part of every generator's seed)."""
    return zlib.crc32(split.encode("utf-8"))


def seconds_for(keyframes_per_video: int) -> int:
    """Video length in seconds for a number of keyframes (2 s margin each side)."""
    return keyframes_per_video + 2 * MARGIN_SECONDS - 1


def keyframes_for(seconds: int) -> int:
    return seconds - 2 * MARGIN_SECONDS + 1


@dataclass
class VideoSim:
    """Motion parameters of one video; evaluate positions at any AVA time with the methods."""

    name: str
    seconds: int
    keyframe_times: np.ndarray  # (T,) float64 AVA seconds
    # actors
    centre0: np.ndarray  # (Na, 2) base centre
    amp: np.ndarray  # (Na, 2, 2) amplitude [axis, harmonic]
    period: np.ndarray  # (Na, 2, 2)
    phase: np.ndarray  # (Na, 2, 2)
    scale: np.ndarray  # (Na,) box scale
    pose_grid: np.ndarray  # (S + 1, Na) pose at AVA seconds 900 .. 900 + S
    present: np.ndarray  # (T, Na) bool: actor present at keyframe
    # objects
    object_class: np.ndarray  # (No,) int64
    holder: np.ndarray  # (No,) int64 actor index or -1 (free object)
    hold_t0: np.ndarray  # (No,) video seconds
    hold_t1: np.ndarray  # (No,)
    offset: np.ndarray  # (No, 2) offset from the holder's centre
    free_centre: np.ndarray  # (No, 2)
    drift_amp: np.ndarray  # (No, 2)
    drift_period: np.ndarray  # (No, 2)
    drift_phase: np.ndarray  # (No, 2)

    @property
    def num_actors(self) -> int:
        return self.centre0.shape[0]

    @property
    def num_objects(self) -> int:
        return self.object_class.shape[0]

    def actor_centres(self, t: np.ndarray) -> np.ndarray:
        """(F,) AVA seconds -> (F, Na, 2) actor box centres."""
        s = np.asarray(t, dtype=np.float64) - VIDEO_START
        # (F, 1, 1, 1) against (Na, 2, 2): sum over harmonics.
        arg = 2 * np.pi * s[:, None, None, None] / self.period[None] + self.phase[None]
        xy = self.centre0[None] + (self.amp[None] * np.sin(arg)).sum(-1)
        return np.clip(xy, 0.12, 0.88)

    def object_centres(self, t: np.ndarray) -> np.ndarray:
        """(F,) AVA seconds -> (F, No, 2) object box centres."""
        t = np.asarray(t, dtype=np.float64)
        s = t - VIDEO_START
        arg = 2 * np.pi * s[:, None, None] / self.drift_period[None] + self.drift_phase[None]
        free = self.free_centre[None] + self.drift_amp[None] * np.sin(arg)  # (F, No, 2)
        out = free
        held = np.nonzero(self.holder >= 0)[0]
        if held.size:
            # The holder's centre at the clipped time: static before pickup / after drop.
            tc = np.clip(s[:, None], self.hold_t0[held][None], self.hold_t1[held][None])  # (F, H)
            flat = self.actor_centres(tc.reshape(-1) + VIDEO_START)  # (F*H, Na, 2)
            flat = flat.reshape(tc.shape[0], held.size, self.num_actors, 2)
            carried = np.take_along_axis(
                flat, self.holder[held][None, :, None, None].repeat(tc.shape[0], 0), axis=2
            )[:, :, 0]  # (F, H, 2)
            out = free.copy()
            out[:, held] = carried + self.offset[held][None]
        return np.clip(out, 0.03, 0.97)

    def poses_at(self, t: np.ndarray) -> np.ndarray:
        """(F,) AVA seconds -> (F, Na) pose index (the pose of the nearest whole second)."""
        i = np.clip(np.floor(np.asarray(t, dtype=np.float64) - VIDEO_START + 0.5).astype(np.int64),
                    0, self.pose_grid.shape[0] - 1)
        return self.pose_grid[i]

    def actor_boxes(self, centres: np.ndarray, poses: np.ndarray) -> np.ndarray:
        """(..., Na, 2) centres and (..., Na) poses -> (..., Na, 4) clipped x1y1x2y2."""
        hw = POSE_BOX_HW[poses] * self.scale[..., None]
        return _boxes(centres, hw)

    def object_boxes(self, centres: np.ndarray) -> np.ndarray:
        return _boxes(centres, np.broadcast_to(OBJECT_BOX_HW[self.object_class], centres.shape))


def _boxes(centres: np.ndarray, hw: np.ndarray) -> np.ndarray:
    half_w, half_h = hw[..., 1] / 2, hw[..., 0] / 2
    x, y = centres[..., 0], centres[..., 1]
    box = np.stack((x - half_w, y - half_h, x + half_w, y + half_h), axis=-1)
    return np.clip(box, 0.0, 1.0)


def simulate_video(
    seed: int,
    index: int,
    keyframes_per_video: int,
    *,
    split: str = "train",
    p_pose_change: float = 0.3,
    p_hold: float = 0.7,
    drop_prob: float = 0.03,
) -> VideoSim:
    """Draw one video's scene from its own generator (see the module docstring)."""
    rng = np.random.default_rng([int(seed), split_code(split), int(index)])
    S = seconds_for(keyframes_per_video)
    T = keyframes_per_video
    na = int(rng.integers(2, 6))
    no = int(rng.integers(3, 9))

    # Base centres in distinct cells of a 3x3 grid: actors start apart and meet as they move,
    # which keeps "talk to" from dominating.
    cells = rng.permutation(9)[:na]
    centre0 = 0.2 + 0.3 * np.stack((cells % 3, cells // 3), -1) + rng.uniform(-0.1, 0.1, (na, 2))
    amp = np.stack((rng.uniform(0.05, 0.2, (na, 2)), rng.uniform(0.01, 0.04, (na, 2))), -1)
    period = np.stack((rng.uniform(15, 60, (na, 2)), rng.uniform(5, 15, (na, 2))), -1)
    phase = rng.uniform(0, 2 * np.pi, (na, 2, 2))
    scale = rng.uniform(0.8, 1.2, na)

    # Pose Markov chain: an increment of 1 or 2 (mod 3) is a change to one of the other poses.
    pose0 = rng.integers(0, 3, na)
    change = rng.random((S, na)) < p_pose_change
    inc = change * rng.integers(1, 3, (S, na))
    pose_grid = (pose0[None] + np.concatenate((np.zeros((1, na), np.int64), np.cumsum(inc, 0)))) % 3

    present = rng.random((T, na)) >= drop_prob
    present[~present.any(1), 0] = True

    object_class = rng.choice(len(OBJECT_CLASSES), size=no, p=OBJECT_CLASS_PROBS).astype(np.int64)
    held = rng.random(no) < p_hold
    holder = np.where(held, rng.integers(0, na, no), -1).astype(np.int64)
    dur = rng.uniform(0.3, 0.8, no) * S + 2.0
    t0 = rng.uniform(-0.2 * dur, S - 0.8 * dur)
    angle = rng.uniform(0, 2 * np.pi, no)
    dist = rng.uniform(0.03, 0.08, no)
    offset = np.stack((np.cos(angle), np.sin(angle)), -1) * dist[:, None]
    free_centre = rng.uniform(0.08, 0.92, (no, 2))
    drift_amp = rng.uniform(0.0, 0.03, (no, 2)) * (rng.random(no) < 0.5)[:, None]  # half static
    drift_period = rng.uniform(30, 90, (no, 2))
    drift_phase = rng.uniform(0, 2 * np.pi, (no, 2))

    return VideoSim(
        name=video_name(index), seconds=S,
        keyframe_times=FIRST_KEYFRAME + np.arange(T, dtype=np.float64),
        centre0=centre0, amp=amp, period=period, phase=phase, scale=scale,
        pose_grid=pose_grid.astype(np.int64), present=present,
        object_class=object_class, holder=holder, hold_t0=t0, hold_t1=t0 + dur, offset=offset,
        free_centre=free_centre, drift_amp=drift_amp, drift_period=drift_period,
        drift_phase=drift_phase,
    )


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
