"""`cache`: inspect, check, convert and compact feature stores (logic in pipelines/cache_tools.py; compaction in extract/store_compact.py)."""
from __future__ import annotations

import json
import sys

import click

from extract.store import StoreError


@click.group("cache")
def cache_cli():
    """Feature-store tools: info, verify, export, import, compact."""


def _fail(e: Exception):
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


@cache_cli.command("info")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print the info as JSON instead of a table.")
def info_cmd(store, as_json):
    """Counts, dims and bytes per array of STORE (path or fsspec URL)."""
    from pipelines.cache_tools import format_info, store_info

    try:
        info = store_info(store)
    except StoreError as e:
        _fail(e)
    click.echo(json.dumps(info, indent=1) if as_json else format_info(info))


@cache_cli.command("verify")
@click.argument("store")
@click.option("--label-map", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="Also check the store's label ids against this pbtxt (default: no check).")
def verify_cmd(store, label_map):
    """Check offsets, NaN/Inf, boxes, completeness and labels; exit 1 on problems."""
    from pipelines.cache_tools import verify_store

    problems = verify_store(store, label_map=label_map)
    for p in problems:
        click.echo(f"PROBLEM: {p}", err=True)
    if problems:
        click.echo(f"{store}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{store}: OK")


@cache_cli.command("export")
@click.argument("store")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--layout", default="stagecache", show_default=True, type=click.Choice(["stagecache", "stage"]),
              help="'stagecache': lossless .h5 of every group; 'stage': STAGE's <video>_<timestamp> groups "
                   "with boxes/features/labels.")
@click.option("--backbone", default=None, show_default=True,
              help="Backbone group whose actor_pooled becomes 'features' (layout stage; default: the only one).")
def export_cmd(store, out, layout, backbone):
    """Write STORE to the HDF5 file OUT."""
    from pipelines.cache_tools import export_h5

    try:
        export_h5(store, out, layout=layout, backbone=backbone)
    except (StoreError, ValueError) as e:
        _fail(e)
    click.echo(f"wrote {out} ({layout} layout)")


@cache_cli.command("import")
@click.argument("h5", type=click.Path(exists=True, dir_okay=False))
@click.argument("store")
@click.option("--layout", default="auto", show_default=True, type=click.Choice(["auto", "stagecache", "stage"]),
              help="Layout of H5; auto detects a stagecache export by its root attribute, else STAGE's.")
@click.option("--split", default=None, show_default=True,
              help="Split name for a STAGE file (default: the file name without extension).")
@click.option("--label-map", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="pbtxt naming the label columns of a STAGE file (default: ids 1..L, names class_<id>).")
@click.option("--backbone", default="stage_slowfast", show_default=True,
              help="Group name for the imported STAGE features.")
@click.option("--detected", is_flag=True, default=False, show_default=True,
              help="STAGE boxes are detections (actor_is_gt=False) rather than ground truth.")
def import_cmd(h5, store, layout, split, label_map, backbone, detected):
    """Build STORE from the HDF5 file H5."""
    from pipelines.cache_tools import import_h5

    try:
        got = import_h5(h5, store, layout=layout, split=split, label_map=label_map, backbone=backbone,
                        boxes_are_gt=not detected)
    except (StoreError, ValueError, KeyError) as e:
        _fail(e)
    click.echo(f"imported {h5} ({got} layout) into {store}")


@cache_cli.command("compact")
@click.argument("store")
@click.option("--target-mb", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Size of the merged fragments in MiB.")
@click.option("--stale-minutes", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Uncommitted fragments older than this are deleted (younger ones may be a live writer's).")
@click.option("--dry-run", is_flag=True, default=False, show_default=True, help="Only report what would be done.")
def compact_cmd(store, target_mb, stale_minutes, dry_run):
    """Merge small fragments of STORE and remove leftovers. Run it when no writer is active."""
    from extract.store_compact import compact

    try:
        rep = compact(store, target_bytes=target_mb << 20, stale_seconds=stale_minutes * 60,
                      dry_run=dry_run, log=click.echo)
    except StoreError as e:
        _fail(e)
    click.echo(json.dumps(rep))
