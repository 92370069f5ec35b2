"""The store's optional backbone levels: one table from level name to store array to `HeadInput` field.

A level name is what `extract features --save`, `synth --levels` and a head's `requires` say
("roi"); the array is where stage 1 writes it in a backbone group (docs/STORE_SCHEMA.md); the field
is the `heads.batch.HeadInput` attribute stage 2 fills from it. `heads/` never imports `extract/`,
so the field is named here as a string and `pipelines/` does the mapping (tests check the names
against HeadInput). To add a level: a row here, its array in docs/STORE_SCHEMA.md, a HeadInput field.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    name: str  # level name: --save / --levels value and head requirement
    array: str  # array name in a backbone group of the store
    field: str  # heads.batch.HeadInput field it feeds


LEVELS: dict[str, Level] = {lv.name: lv for lv in (
    Level("roi", "actor_roi", "actor_roi"),  # (A, C, k, k) per-box RoI map
    Level("temporal", "actor_temporal", "actor_temporal"),  # (A, T, C) per-box temporal sequence
    Level("context", "kf_context", "context"),  # (K, C, H, W) per-keyframe context map
)}
LEVEL_OF_ARRAY: dict[str, Level] = {lv.array: lv for lv in LEVELS.values()}
