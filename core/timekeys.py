"""The one timestamp tolerance.

AVA timestamps are float seconds (`902.0`). Two timestamps are the same keyframe when their integer
milliseconds agree (the key: `extract.ava_io.timestamp_key` / `timestamp_keys`, stage 1 and 2 only),
and a time window edge `|t_i - t_j| <= radius` admits anything within `TIME_EPS` (1 ms, the key's
resolution) so a neighbour exactly on the edge is never lost to float rounding. The heads need only
the tolerance, hence it lives here where `heads/` may import it.
"""
from __future__ import annotations

__all__ = ["TIME_EPS"]

TIME_EPS = 1e-3  # seconds: the resolution of a timestamp key
