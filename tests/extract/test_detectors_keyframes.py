import numpy as np
import pytest
import torch

from stagecache.extract.detectors.keyframes import detect_keyframes, frames_to_tensor, read_keyframes
from stagecache.extract.video import VideoReadError


class _Reader:
    """Frame i of the grid is filled with value i; read_clip(t, 2, 1) ends on frame round(t)."""

    def read_clip(self, t, num_frames, rate):
        assert (num_frames, rate) == (2, 1)
        c = int(round(t))
        if c > 9:
            raise VideoReadError("truncated")
        return np.stack([np.full((2, 3, 3), i, np.uint8) for i in (c - 1, c)])


class _Det:
    def __init__(self):
        self.calls = []

    def __call__(self, frames, keys=None):
        self.calls.append((None if frames is None else frames.clone(), keys))
        return [len(self.calls)] * len(keys)


def test_frames_to_tensor_layout_and_scale():
    f = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)  # (B, H, W, 3)
    t = frames_to_tensor(f)
    assert t.shape == (2, 3, 2, 3) and t.dtype == torch.float32
    torch.testing.assert_close(t[1, 2, 0, 1], torch.tensor(float(f[1, 0, 1, 2]) / 255.0))


def test_detect_keyframes_batches_keys_and_images():
    a, b = _Det(), _Det()
    times = np.array([3.0, 4.0, 5.0, 6.0, 7.0])
    out = list(detect_keyframes((a, None, b), _Reader(), "v", times, batch_size=2))
    assert [s for s, _ in out] == [0, 2, 4]
    assert [o[1] for _, o in out] == [None, None, None]
    assert [o[0] for _, o in out] == [[1, 1], [2, 2], [3]]
    assert [k for _, k in a.calls] == [[("v", 3.0), ("v", 4.0)], [("v", 5.0), ("v", 6.0)], [("v", 7.0)]]
    frames = a.calls[1][0]  # the keyframes' own frames, (B, 3, H, W) in [0, 1]
    assert frames.shape == (2, 3, 2, 3)
    torch.testing.assert_close(frames[:, 0, 0, 0], torch.tensor([5.0, 6.0]) / 255.0, rtol=0, atol=0)
    torch.testing.assert_close(b.calls[1][0], frames)
    assert read_keyframes(_Reader(), [2.0]).shape == (1, 2, 3, 3)


def test_detect_keyframes_without_reader_and_errors_name_the_video():
    a = _Det()
    list(detect_keyframes((a,), None, "v", np.array([1.0]), batch_size=4))
    assert a.calls[0][0] is None
    with pytest.raises(VideoReadError, match="^video clip7: truncated$"):
        list(detect_keyframes((a,), _Reader(), "clip7", np.array([10.0]), batch_size=4))
