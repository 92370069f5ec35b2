"""The commit protocol of the feature store: which fragments are visible, and how they get there.

docs/STORE_SCHEMA.md ("Commits") is the specification. In short:
- a flush writes the data of all its fragments (one per group), then one manifest per fragment;
  every manifest lists the whole flush as its `unit`. A fragment is visible only when every member
  of its unit is accounted for: it has a manifest, or its data directory is gone (compacted away).
  A member whose data is on disk without a manifest means the flush was cut short: the whole unit
  stays invisible, so a video is committed in all of its groups or in none.
- a committed, not superseded manifest whose data directory is missing (a store damaged by an
  older stagecache's compaction) is ignored with a warning, so the store stays readable and a
  rerun redoes those videos; `cache compact` removes such manifests.
- removal is data first, manifest last (`remove_fragment`); cleanup of a cut-short unit removes its
  manifests first, data last (`clean_uncommitted`). Either order keeps the rules above true at
  every step, so a kill at any moment leaves a consistent store.

`STAGECACHE_KILL_AFTER_COMMITS=N` makes the process SIGKILL itself right after its N-th manifest
write (every writer: StoreWriter, write_group, compaction); tests kill at every commit point.
"""
from __future__ import annotations

import os
import signal
import warnings
from typing import Callable

from stagecache.extract.store.io import COMMITS, FRAGMENTS, SCHEMA_VERSION, Location, StoreError

KILL_ENV = "STAGECACHE_KILL_AFTER_COMMITS"
_commits_done = 0


def commit_point() -> None:
    """Count one durable commit; the deterministic kill hook of the tests."""
    global _commits_done
    n = os.environ.get(KILL_ENV)
    if not n:
        return
    _commits_done += 1
    if _commits_done >= int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def _check_version(loc: Location, where: str, ver) -> None:
    if ver != SCHEMA_VERSION:
        raise StoreError(f"{loc.display}: {where} has schema_version {ver}, this stagecache reads schema version "
                         f"{SCHEMA_VERSION} (docs/STORE_SCHEMA.md)")


def read_manifests(loc: Location) -> tuple[dict[str, dict], bool]:
    """(fragment id -> manifest for every manifest file, superseded ones included; whether one
    vanished while being read, i.e. a compaction ran meanwhile)."""
    out, vanished = {}, False
    for name in loc.listdir(COMMITS):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            m = loc.read_json(f"{COMMITS}/{name}")
        except FileNotFoundError:
            vanished = True
            continue
        except ValueError:
            raise StoreError(f"{loc.display}: {COMMITS}/{name} is not valid JSON (a damaged manifest)") from None
        if not isinstance(m, dict) or not isinstance(m.get("fragment"), str):
            raise StoreError(f"{loc.display}: {COMMITS}/{name} names no fragment (a damaged manifest)")
        _check_version(loc, f"{COMMITS}/{name}", m.get("schema_version"))
        out[m["fragment"]] = m
    return out, vanished


class Commits:
    """A snapshot of the commit state: manifests first, then the data directories (this order
    matters: a unit's data is all written before its first manifest). A compaction running
    meanwhile (a manifest vanishing while read, or data removed after its manifest was read: it
    commits the merged fragment before removing anything) makes the snapshot start again, so a
    writer's `done()` never misses merged videos (it would write them twice)."""

    def __init__(self, loc: Location, attempts: int = 3):
        self.loc = loc
        for _ in range(attempts):
            self.manifests, vanished = read_manifests(loc)
            self.dirs = set(loc.listdir(FRAGMENTS))
            self.superseded = {s for m in self.manifests.values() for s in m.get("supersedes", [])}
            self._lost = [m for fid, m in sorted(self.manifests.items())
                          if fid not in self.superseded and not self.unit_cut_short(m)
                          and fid not in self.dirs and not self.loc.exists(f"{FRAGMENTS}/{fid}")]
            if not vanished and not self._lost:
                break

    def unit_cut_short(self, m: dict) -> bool:
        """A member of m's unit has data on disk but no manifest: the flush was cut short (or is
        still running)."""
        return any(u not in self.manifests and u in self.dirs for u in m.get("unit") or [m["fragment"]])

    def lost(self) -> list[dict]:
        """Committed manifests (not superseded, unit complete) whose data directory is missing."""
        return list(self._lost)

    def visible(self) -> list[dict]:
        lost = {m["fragment"] for m in self.lost()}
        for fid in sorted(lost):
            m = self.manifests[fid]
            warnings.warn(f"{self.loc.display}: {COMMITS}/{fid}.json is committed but its data {FRAGMENTS}/{fid} "
                          f"is missing; ignoring its {len(m['videos'])} video(s) of group {m['group']!r} (a rerun "
                          f"redoes them; `cache compact` removes the manifest)")
        return [m for fid, m in sorted(self.manifests.items())
                if fid not in self.superseded and not self.unit_cut_short(m) and fid not in lost]


def list_manifests(loc: Location) -> list[dict]:
    """The visible manifests (not superseded, unit complete, data present), sorted by fragment id."""
    return Commits(loc).visible()


def committed_ids(loc: Location) -> set[str]:
    """Fragment ids that have a manifest file (visible or not)."""
    return {n[:-5] for n in loc.listdir(COMMITS) if n.endswith(".json") and not n.startswith(".")}


def write_manifests(loc: Location, manifests: list[dict]) -> None:
    """Commit fragments whose data is written: check the data is still there (a compaction of an
    older stagecache may have removed it), then one atomic manifest per fragment."""
    for m in manifests:
        fid = m["fragment"]
        need = [f"{FRAGMENTS}/{fid}/zarr.json"] + [f"{FRAGMENTS}/{fid}/{n}/zarr.json" for n in sorted(m["arrays"])]
        gone = [p for p in need if not loc.exists(p)]
        if gone:
            raise StoreError(f"{loc.display}: data of fragment {fid} ({gone[0]}) vanished "
                             f"before its commit; nothing of it was committed; rerun to redo its videos")
    for m in manifests:
        loc.write_json_atomic(f"{COMMITS}/{m['fragment']}.json", m)
        commit_point()


def remove_fragment(loc: Location, fid: str) -> None:
    """Remove a superseded fragment: data first, manifest last (a superseded manifest without data
    is harmless; data without a manifest would look like a cut-short flush)."""
    loc.remove(f"{FRAGMENTS}/{fid}")
    loc.remove(f"{COMMITS}/{fid}.json")


def drop_unit(loc: Location, c: "Commits", fid: str) -> list[str]:
    """Remove a committed fragment together with the rest of its commit unit (a damaged fragment:
    `cache verify --repair`, `cache compact`): every member's manifest first, then the data, so the
    unit is invisible from the first removal on and a kill half-way leaves it invisible (the
    leftover data is a cut-short unit, cleaned like one). Returns the fragment ids removed."""
    m = c.manifests[fid]
    members = [u for u in (m.get("unit") or [fid]) if u in c.manifests or u in c.dirs]
    members = [fid] + sorted(u for u in members if u != fid)
    for u in members:
        loc.remove(f"{COMMITS}/{u}.json")
    for u in members:
        loc.remove(f"{FRAGMENTS}/{u}")
    return members


def clean_uncommitted(loc: Location, owned: Callable[[str], bool]) -> int:
    """Remove cut-short units, uncommitted data and manifests without data, of the fragments `owned`
    selects (those of a writer known to be dead, or the caller's own). Manifests of a cut-short unit
    go first, its data last, so a kill half-way leaves the unit still invisible. Returns the
    directories removed."""
    c = Commits(loc)
    lost = {m["fragment"] for m in c.lost()}
    for fid, m in sorted(c.manifests.items()):
        cut = fid not in c.superseded and c.unit_cut_short(m)
        if (cut and all(owned(u) for u in m.get("unit") or [fid])) or (fid in lost and owned(fid)):
            loc.remove(f"{COMMITS}/{fid}.json")
    have = committed_ids(loc)
    n = 0
    for fid in sorted(c.dirs):
        if fid not in have and owned(fid):
            loc.remove(f"{FRAGMENTS}/{fid}")
            n += 1
    return n
