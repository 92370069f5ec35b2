"""`cache`: inspect, check, convert and compact feature stores (logic in pipelines/tools/cache.py; compaction in extract/store/compact.py)."""
from __future__ import annotations

import json
import sys

import click

from stagecache.core.errors import UserError
from stagecache.extract.store import StoreError
from stagecache.pipelines.commands.options import dataclass_options
from stagecache.pipelines.tools.cache import (CacheCompactArgs, CacheExportArgs, CacheImportArgs, CacheInfoArgs,
                                              CacheVerifyArgs)


@click.group("cache")
def cache_cli():
    """Feature-store tools: info, verify, export, import, compact."""


def _fail(e: Exception):
    # The project's convention for a UserError: one line, exit 1, no traceback.
    click.echo(f"Error: {e}", err=True)
    sys.exit(1)


@cache_cli.command("info", context_settings={"show_default": True})
@dataclass_options(CacheInfoArgs)
def info_cmd(**kw):
    """Counts, dims and bytes per array of STORE (path or fsspec URL)."""
    from stagecache.pipelines.tools.cache import format_info, store_info

    args = CacheInfoArgs(**kw)
    try:
        info = store_info(args.store)
    except StoreError as e:
        _fail(e)
    click.echo(json.dumps(info, indent=1) if args.as_json else format_info(info))


@cache_cli.command("verify", context_settings={"show_default": True})
@dataclass_options(CacheVerifyArgs)
def verify_cmd(**kw):
    """Check files (sizes, checksums), offsets, NaN/Inf, boxes, completeness and labels; exit 1 on problems.
    --repair drops damaged fragments so a resumed extraction redoes their videos."""
    from stagecache.pipelines.tools.cache import verify_store

    args = CacheVerifyArgs(**kw)
    try:
        problems = verify_store(args.store, label_map=args.label_map, repair=args.repair, progress=args.progress,
                                log=lambda line: click.echo(line, err=True))
    except UserError as e:  # --repair while a compaction runs
        _fail(e)
    for p in problems:
        click.echo(f"PROBLEM: {p}", err=True)
    if problems:
        click.echo(f"{args.store}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{args.store}: OK")


@cache_cli.command("export", context_settings={"show_default": True})
@dataclass_options(CacheExportArgs)
def export_cmd(**kw):
    """Write STORE to OUT (an HDF5 file, or a directory for --layout stage-i3d)."""
    from stagecache.pipelines.tools.cache import export_h5

    args = CacheExportArgs(**kw)  # click's choices already hold what it checks
    # what the step does (stdout: stderr is kept for the one error line); the store is read whole first
    click.echo(f"exporting {args.store} to {args.out} ({args.layout} layout): reading every group, then writing")
    try:
        export_h5(args.store, args.out, layout=args.layout, backbone=args.backbone, objects=args.objects)
    except UserError as e:
        _fail(e)
    click.echo(f"wrote {args.out} ({args.layout} layout)" + (f" and {args.objects}" if args.objects else ""))


@cache_cli.command("import", context_settings={"show_default": True})
@dataclass_options(CacheImportArgs)
def import_cmd(**kw):
    """Build STORE from SRC (an HDF5 file, or STAGE's I3D actors directory). STAGE imports commit
    video by video: rerunning a killed import resumes it."""
    from stagecache.pipelines.tools.cache import import_h5

    args = CacheImportArgs(**kw)  # click's choices already hold what it checks
    try:
        got = import_h5(args.src, args.store, layout=args.layout, split=args.split, label_map=args.label_map,
                        label_columns=args.label_columns, backbone=args.backbone, boxes_are_gt=not args.detected,
                        objects=args.objects, object_names=args.object_names, progress=args.progress, log=click.echo)
    except UserError as e:
        _fail(e)
    click.echo(f"imported {args.src} ({got} layout) into {args.store}")


@cache_cli.command("compact", context_settings={"show_default": True})
@dataclass_options(CacheCompactArgs)
def compact_cmd(**kw):
    """Merge small fragments of STORE and remove leftovers. Live writers of a local store are safe
    (their files are left alone); on fsspec stores run it when no writer is active."""
    from stagecache.extract.store import compact

    args = CacheCompactArgs(**kw)  # click's ranges already hold what it checks
    try:
        rep = compact(args.store, target_bytes=args.target_mb << 20, stale_seconds=args.stale_minutes * 60,
                      dry_run=args.dry_run, log=click.echo)
    except StoreError as e:
        _fail(e)
    click.echo(json.dumps(rep))
