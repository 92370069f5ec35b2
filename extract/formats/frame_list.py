"""PySlowFast frame lists, re-exported by `extract.ava_io`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.extract.formats.csv_table import HEADER_FIRST_FIELDS as _HEADER_FIRST_FIELDS, AvaFormatError


# ----------------------------------------------------------------------------- PySlowFast frame lists

@dataclass
class FrameList:
    original_video_id: np.ndarray  # (N,) str
    video_idx: np.ndarray  # (N,) int64
    frame_id: np.ndarray  # (N,) int64
    path: np.ndarray  # (N,) str, relative to the frame directory
    labels: np.ndarray  # (N,) str, comma-separated label ids or "" / '""'

    def __len__(self) -> int:
        return len(self.frame_id)


def read_frame_list(path) -> FrameList:
    """PySlowFast `frame_lists/{train,val}.csv`: space separated with a header line."""
    rows, lines = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if not rows and not lines and parts[0] in _HEADER_FIRST_FIELDS:
                continue
            if len(parts) not in (4, 5):
                raise AvaFormatError(path, lineno, f"expected 5 space-separated columns "
                                     f"(original_vido_id video_id frame_id path labels), found {len(parts)}")
            rows.append(parts if len(parts) == 5 else parts + [""])
            lines.append(lineno)
    ints = np.zeros((len(rows), 2), np.int64)
    for r, (row, line) in enumerate(zip(rows, lines)):
        try:
            ints[r] = int(row[1]), int(row[2])
        except ValueError:
            raise AvaFormatError(path, line, f"video_id / frame_id not integers: {row[1]!r} {row[2]!r}") from None
    vid, fid = ints[:, 0], ints[:, 1]
    return FrameList(np.array([r[0] for r in rows], dtype=str), vid, fid,
                     np.array([r[3] for r in rows], dtype=str), np.array([r[4] for r in rows], dtype=str))


def write_frame_list(path, fl: FrameList) -> None:
    with atomic_open(path, "w") as f:
        f.write("original_vido_id video_id frame_id path labels\n")
        for o, v, i, p, lab in zip(fl.original_video_id.tolist(), fl.video_idx.tolist(), fl.frame_id.tolist(),
                                   fl.path.tolist(), fl.labels.tolist()):
            f.write(f"{o} {v} {i} {p} {lab or chr(34) * 2}\n")
