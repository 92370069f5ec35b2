"""Reading keyframe clips: PyAV by seeking, and PySlowFast frame folders.

Time conventions (documented choice, see `ExtractArgs.time_offset`):
  video_time = annotation_timestamp - time_offset
  * raw full AVA movies: offset 0 (the CSV's 902..1798 are movie seconds);
  * AVA's trimmed 15-minute clips (`ffmpeg -ss 900 -t 901`) and PySlowFast frame folders: offset 900;
  * AVA-Kinetics clips `<ytid>_<start:06d>_<end:06d>.mp4`: offset = start, per video (taken from the
    file name by `find_videos(..., kinetics_names=True)`).

Clip sampling follows PySlowFast's `get_sequence` on a 30 fps grid: for a keyframe at grid index c
(PySlowFast: c = (t - 900) * 30, 0-based into the frame list, i.e. file `<video>_{c+1:06d}.jpg`),
frames c - L/2, c - L/2 + rate, ..., with L = num_frames * rate, clamped into the video.
A raw video is sampled at the same grid times (c + k) / fps: the frame shown at that time (the last
frame whose timestamp is <= the sample time) is used, so a 30 fps file and its frame folder agree.
"""

from __future__ import annotations

from stagecache.core.errors import UserError

import math
import re
from pathlib import Path

import av
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
_EPS = 1e-4


class VideoReadError(UserError, RuntimeError):
    """A video cannot be read; the message names the file."""


def sample_indices(center: int, num_frames: int, rate: int) -> np.ndarray:
    """PySlowFast's sequence: `range(center - L/2, center + L/2, rate)` with L = num_frames * rate."""
    length = num_frames * rate
    start = center - length // 2
    return np.arange(start, start + length, rate, dtype=np.int64)


def output_size(height: int, width: int, short_side: int | None, square: bool = False) -> tuple[int, int]:
    """(H, W) after resizing the short side to `short_side` (aspect kept) or to a square."""
    if short_side is None:
        return height, width
    if square:
        return short_side, short_side
    if height <= width:
        return short_side, int(round(width * short_side / height))
    return int(round(height * short_side / width)), short_side


class VideoReader:
    """A video file read by seeking to each clip's window; consecutive clips reuse decoded frames."""

    def __init__(self, path: str | Path, *, short_side: int | None = None, square: bool = False,
                 fps: float = 30.0, time_offset: float = 0.0, threads: int = 1):
        self.path = str(path)
        self.fps, self.time_offset = fps, time_offset
        try:
            self._container = av.open(self.path)
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise VideoReadError(f"cannot open video {self.path}: {e}") from e
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        tb = self._stream.time_base
        self._tb = float(tb) if tb is not None else 1.0
        start = self._stream.start_time
        self._start = float(start * tb) if start is not None and tb is not None else 0.0
        h, w = self._stream.codec_context.height, self._stream.codec_context.width
        self.size = output_size(h, w, short_side, square)
        if self._stream.duration is not None and tb is not None:
            self.duration = float(self._stream.duration * tb)
        elif self._container.duration is not None:
            self.duration = self._container.duration / av.time_base
        else:
            self.duration = math.inf
        self._iter = None
        self._buf: list[tuple[float, av.VideoFrame]] = []  # (time, frame) in decode order
        self._eof = False
        self._converted: dict[float, np.ndarray] = {}

    # -- decoding
    def _seek(self, t: float) -> None:
        target = max(t - 0.5 + self._start, 0.0)
        try:
            self._container.seek(int(target / self._tb), stream=self._stream, backward=True,
                                 any_frame=False)
        except av.FFmpegError as e:
            raise VideoReadError(f"cannot seek in video {self.path} to {t:.3f}s: {e}") from e
        self._iter = self._container.decode(self._stream)
        self._buf, self._eof, self._converted = [], False, {}

    def _decode_until(self, t_end: float) -> None:
        while not self._eof and (not self._buf or self._buf[-1][0] < t_end + _EPS):
            try:
                frame = next(self._iter)
            except StopIteration:
                self._eof = True
                break
            except av.FFmpegError as e:
                raise VideoReadError(f"decoding error in video {self.path}: {e}") from e
            if frame.pts is None:
                continue
            self._buf.append((float(frame.pts * self._tb) - self._start, frame))

    def _to_array(self, t: float, frame: av.VideoFrame) -> np.ndarray:
        if t not in self._converted:
            h, w = self.size
            self._converted[t] = frame.to_ndarray(format="rgb24", width=w, height=h,
                                                  interpolation="BILINEAR")
        return self._converted[t]

    def read_times(self, times: np.ndarray) -> np.ndarray:
        """Frames shown at the given video times (seconds, ascending) -> (T, H, W, 3) uint8.

        Times before the first frame / after the last one are clamped to it (PySlowFast clamps
        indices). A time more than one second past the last decodable frame means the file is
        shorter than its header says: VideoReadError.
        """
        t0, t1 = max(float(times[0]), 0.0), float(times[-1])
        if (self._iter is None or not self._buf or t0 < self._buf[0][0] - _EPS
                or (self._buf[-1][0] < t0 - 2.0 and not self._eof)
                or (self._eof and t0 < self._buf[-1][0] - 2.0)):
            self._seek(t0)
        self._decode_until(t1)
        if not self._buf:
            raise VideoReadError(f"no decodable frames in video {self.path} near {t0:.3f}s")
        if self._eof and t1 > self._buf[-1][0] + 1.0 and t1 <= self.duration:
            raise VideoReadError(f"video {self.path} is truncated: frames end at "
                                 f"{self._buf[-1][0]:.2f}s, header duration {self.duration:.2f}s")
        ts = np.array([b[0] for b in self._buf])
        idx = np.clip(np.searchsorted(ts, times + _EPS, side="right") - 1, 0, len(ts) - 1)
        out = np.stack([self._to_array(ts[i], self._buf[i][1]) for i in idx])
        # keep the frame shown at t0 and everything after it: the next (overlapping) clip reuses them
        keep = max(int(idx.min()), 0)
        if keep:
            for t, _ in self._buf[:keep]:
                self._converted.pop(t, None)
            self._buf = self._buf[keep:]
        return out

    def read_clip(self, timestamp: float, num_frames: int, rate: int) -> np.ndarray:
        """The clip around annotation time `timestamp` (see module doc) -> (T, H, W, 3) uint8."""
        center = int(round((timestamp - self.time_offset) * self.fps))
        times = sample_indices(center, num_frames, rate) / self.fps
        return self.read_times(times)

    def close(self) -> None:
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FrameFolderReader:
    """PySlowFast frame folder `<dir>/<video>_%06d.jpg`, or JHMDB / UCF101-24 `<dir>/%05d.png|jpg`
    (extract.datasets); 1-based numbering, frame k at (k-1)/fps."""

    def __init__(self, path: str | Path, *, short_side: int | None = None, square: bool = False,
                 fps: float = 30.0, time_offset: float = 900.0, **_):
        self.path = str(path)
        self.fps, self.time_offset = fps, time_offset
        d = Path(path)
        self._name = d.name + "_{:06d}.jpg"
        pattern = re.compile(re.escape(d.name) + r"_(\d{6})\.jpg$")
        nums = sorted(int(m.group(1)) for f in d.iterdir() if (m := pattern.match(f.name)))
        for ext in (".png", ".jpg") if not nums else ():
            pattern, self._name = re.compile(r"(\d{5})" + re.escape(ext) + "$"), "{:05d}" + ext
            if nums := sorted(int(m.group(1)) for f in d.iterdir() if (m := pattern.match(f.name))):
                break
        if not nums:
            raise VideoReadError(f"frame folder {d} has no {d.name}_%06d.jpg (or %05d.png / %05d.jpg) frames")
        if nums[0] != 1 or nums[-1] != len(nums):
            raise VideoReadError(f"frame folder {d} is not numbered 1..N without gaps")
        self._dir, self.num_frames = d, len(nums)
        self.duration = self.num_frames / fps
        first = self._load(0)
        self._raw = first.shape[:2]
        self.size = output_size(first.shape[0], first.shape[1], short_side, square)

    def _load(self, i: int) -> np.ndarray:
        f = self._dir / self._name.format(i + 1)
        try:
            with av.open(str(f)) as c:
                return next(c.decode(video=0)).to_ndarray(format="rgb24")
        except (av.FFmpegError, StopIteration, OSError) as e:
            raise VideoReadError(f"cannot read frame {f}: {e}") from e

    def read_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.clip(indices, 0, self.num_frames - 1)
        cache: dict[int, np.ndarray] = {}
        for i in idx:
            if int(i) not in cache:
                cache[int(i)] = self._load(int(i))
        frames = [cache[int(i)] for i in idx]
        import torch  # here, not with the module: the dataset readers and --help import this module (issue 32)
        import torch.nn.functional as F

        x = torch.from_numpy(np.stack(frames))  # (T, h, w, 3)
        if tuple(x.shape[1:3]) != tuple(self.size):
            x = F.interpolate(x.permute(0, 3, 1, 2).float(), size=self.size, mode="bilinear",
                              align_corners=False).round_().clamp_(0, 255).byte().permute(0, 2, 3, 1)
        return x.numpy()

    def read_clip(self, timestamp: float, num_frames: int, rate: int) -> np.ndarray:
        center = int(round((timestamp - self.time_offset) * self.fps))
        return self.read_indices(sample_indices(center, num_frames, rate))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def open_video(path: str | Path, **kwargs) -> VideoReader | FrameFolderReader:
    """A frame folder (directory) or a video file."""
    return FrameFolderReader(path, **kwargs) if Path(path).is_dir() else VideoReader(path, **kwargs)


_KINETICS_NAME = re.compile(r"^(?P<id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")


def find_videos(root: str | Path, *, kinetics_names: bool = False) -> dict[str, tuple[Path, float | None]]:
    """Map video id -> (path, per-video time offset or None) for files/folders under `root`.

    A video is a file with a known extension (id = file stem) or a frame folder (id = folder
    name). With `kinetics_names`, `<id>_<start>_<end>` stems map to id with offset `start`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video directory {root} does not exist")
    out: dict[str, tuple[Path, float | None]] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir():
            vid, path = p.name, p
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            vid, path = p.stem, p
        else:
            continue
        offset = None
        if kinetics_names and (m := _KINETICS_NAME.match(vid)):
            vid, offset = m.group("id"), float(int(m.group("start")))
        if vid in out:  # e.g. two Kinetics clips of one YouTube id: the store holds one video per id
            raise VideoReadError(f"two inputs for video {vid!r}: {out[vid][0]} and {path}; keep one of them "
                                 "in the video directory")
        out[vid] = (path, offset)
    return out
