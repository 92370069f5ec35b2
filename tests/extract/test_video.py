"""extract/video.py on tiny videos written here with PyAV: frame i shows gray level 8*(i % 30) + 8."""

from pathlib import Path

import av
import numpy as np
import pytest

from stagecache.extract.video import (FrameFolderReader, VideoReadError, VideoReader, find_videos, open_video,
                           output_size, sample_indices)

FPS = 30
N = 120  # 4 s


def _level(i):
    return 8 * (i % 30) + 8


def _frame(i, h=48, w=64):
    return np.full((h, w, 3), _level(i), dtype=np.uint8)


def write_video(path, n=N, fps=FPS):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"qscale": "1"}
        s.codec_context.gop_size = 12
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_index(clip):
    """Recover the frame index (mod 30) encoded in each frame's gray level."""
    return np.round((clip.reshape(len(clip), -1).mean(1) - 8) / 8).astype(int)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "vid.mp4")


def test_sample_indices_match_pyslowfast_get_sequence():
    # reference: PySlowFast get_sequence(center, half_len=L//2, rate) before clamping
    c, T, r = 60, 32, 2
    ref = [c - 32 + k for k in range(0, 64, 2)]
    assert sample_indices(c, T, r).tolist() == ref


def test_read_clip_picks_the_grid_frames(video):
    with VideoReader(video, time_offset=900.0) as r:
        assert r.size == (48, 64)
        assert abs(r.duration - N / FPS) < 0.1
        clip = r.read_clip(902.0, 8, 4)  # center index 60: frames 44, 48, ..., 72
        assert clip.shape == (8, 48, 64, 3) and clip.dtype == np.uint8
        expect = np.array([(60 - 16 + 4 * k) % 30 for k in range(8)])
        assert (decoded_index(clip) == expect).all()
        # clamping at the start of the video, like PySlowFast's get_sequence
        clip = r.read_clip(900.0, 4, 4)  # indices -8, -4, 0, 4 -> 0, 0, 0, 4
        assert decoded_index(clip).tolist() == [0, 0, 0, 4]


def test_random_order_equals_sequential(video):
    times = [901.0, 902.5, 901.5, 903.0, 900.5]
    with VideoReader(video, time_offset=900.0) as a:
        seq = {t: a.read_clip(t, 4, 2) for t in sorted(times)}
    with VideoReader(video, time_offset=900.0) as b:
        for t in times:
            np.testing.assert_array_equal(b.read_clip(t, 4, 2), seq[t])


def test_resize_short_side(video):
    assert output_size(48, 64, 32) == (32, 43)
    assert output_size(48, 64, 32, square=True) == (32, 32)
    with VideoReader(video, short_side=24) as r:
        assert r.read_clip(1.0, 2, 2).shape == (2, 24, 32, 3)


def test_frame_folder_numbering(tmp_path):
    d = tmp_path / "vidA"
    d.mkdir()
    for i in range(90):
        with av.open(str(d / f"vidA_{i + 1:06d}.jpg"), "w") as c:
            s = c.add_stream("mjpeg")
            s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
            s.options = {"qscale": "1"}
            for p in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    r = open_video(d)
    assert isinstance(r, FrameFolderReader) and r.time_offset == 900.0
    # AVA keyframe 902 -> 0-based index (902 - 900) * 30 = 60 -> file vidA_000061.jpg
    clip = r.read_clip(902.0, 1, 1)
    assert decoded_index(r.read_indices(np.array([60]))).tolist() == [0]
    assert decoded_index(clip).tolist() == [60 % 30]
    clip = r.read_clip(901.0, 4, 2)  # center 30: 26, 28, 30, 32
    assert decoded_index(clip).tolist() == [26, 28, 0, 2]


def test_unreadable_and_truncated_videos_name_the_file(tmp_path, video):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match="garbage.mp4"):
        VideoReader(bad)
    data = Path(video).read_bytes()
    trunc = tmp_path / "trunc.mp4"
    # mp4 keeps its index at the end: cutting the file makes it unreadable or short
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="trunc.mp4"):
        r = VideoReader(trunc)
        r.read_clip(3.5, 4, 2)


def test_truncated_stream_detected(tmp_path):
    # a container whose header claims more than it holds: mkv written fully, then cut
    p = tmp_path / "cut.mkv"
    with av.open(str(p), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(N):
            for pk in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    r = VideoReader(p)
    assert abs(r.duration - N / FPS) < 0.1  # the header still claims 4 s
    r.read_clip(0.5, 4, 2)  # the part that is there reads fine
    with pytest.raises(VideoReadError, match="cut.mkv.*truncated"):
        r.read_clip(3.5, 4, 2)


def test_find_videos(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "yt123_000010_000020.mkv").write_bytes(b"")
    got = find_videos(tmp_path)
    assert set(got) == {"a", "b", "yt123_000010_000020"}
    got = find_videos(tmp_path, kinetics_names=True)
    assert got["yt123"][1] == 10.0 and got["a"][1] is None


def test_two_inputs_for_one_video_id_is_one_error_line(tmp_path):
    """Two Kinetics clips of one YouTube id (or a file beside its frame folder) name the same video."""
    from stagecache.core.errors import UserError
    from stagecache.extract.video import find_videos

    (tmp_path / "abc_000010_000020.mp4").write_bytes(b"")
    (tmp_path / "abc_000030_000040.mp4").write_bytes(b"")
    with pytest.raises(UserError, match=r"two inputs for video 'abc': .*abc_000010_000020.mp4 and .*abc_000030"):
        find_videos(tmp_path, kinetics_names=True)
