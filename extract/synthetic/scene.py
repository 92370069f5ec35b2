"""Scene simulation of the synthetic AVA-format dataset: each video's actors, objects and poses over time.

The label map, the label rules and the flat tables built from these scenes are in
`extract/synthetic/world.py`.

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
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

OBJECT_CLASSES: list[str] = ["cup", "bike", "phone", "chair"]
POSES: list[str] = ["stand", "sit", "lie"]  # pose index p <-> label id p + 1
STAND, SIT, LIE = 0, 1, 2
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
