"""`cache`: inspect, check, convert and compact feature stores (logic in pipelines/tools/cache.py; compaction in extract/store/compact.py)."""
from __future__ import annotations

import json
import sys

import click

from stagecache.core.errors import UserError
from stagecache.extract.store import StoreError


@click.group("cache")
def cache_cli():
    """Feature-store tools: info, verify, export, import, compact."""


def _fail(e: Exception):
    # The project's convention for a UserError: one line, exit 1, no traceback.
    click.echo(f"Error: {e}", err=True)
    sys.exit(1)


@cache_cli.command("info")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print the info as JSON instead of a table.")
def info_cmd(store, as_json):
    """Counts, dims and bytes per array of STORE (path or fsspec URL)."""
    from stagecache.pipelines.tools.cache import format_info, store_info

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
    from stagecache.pipelines.tools.cache import verify_store

    problems = verify_store(store, label_map=label_map)
    for p in problems:
        click.echo(f"PROBLEM: {p}", err=True)
    if problems:
        click.echo(f"{store}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{store}: OK")


@cache_cli.command("export")
@click.argument("store")
@click.argument("out", type=click.Path())
@click.option("--layout", default="stagecache", show_default=True,
              type=click.Choice(["stagecache", "stage-i3d", "stage-slowfast", "stage"]),
              help="'stagecache': lossless .h5 of every group; 'stage-i3d': directory OUT/<video>/<timestamp>.h5 "
                   "(STAGE's I3D release); 'stage-slowfast' (alias 'stage'): one .h5 of <video>_<timestamp> groups "
                   "(STAGE's SlowFast release). Labels get 81 columns, column 0 background, column c = id c.")
@click.option("--backbone", default=None, show_default=True,
              help="Backbone group whose actor_pooled becomes 'features' (STAGE layouts; default: the only one).")
@click.option("--objects", default=None, show_default=True, type=click.Path(dir_okay=False),
              help="Also write the objects in the release's objects_features.h5 layout to this file "
                   "(STAGE layouts; needs base/object_feature).")
def export_cmd(store, out, layout, backbone, objects):
    """Write STORE to OUT (an HDF5 file, or a directory for --layout stage-i3d)."""
    from stagecache.pipelines.tools.cache import export_h5

    try:
        export_h5(store, out, layout=layout, backbone=backbone, objects=objects)
    except UserError as e:
        _fail(e)
    click.echo(f"wrote {out} ({layout} layout)" + (f" and {objects}" if objects else ""))


@cache_cli.command("import")
@click.argument("src", type=click.Path(exists=True))
@click.argument("store")
@click.option("--layout", default="auto", show_default=True,
              type=click.Choice(["auto", "stagecache", "stage-i3d", "stage-slowfast", "stage"]),
              help="Layout of SRC. auto: a directory is stage-i3d (ACTORS_DIR/<video>/<timestamp>.h5), an .h5 "
                   "with a stagecache root attribute is stagecache, any other .h5 stage-slowfast "
                   "(<video>_<timestamp> groups). 'stage' is the old name of stage-slowfast.")
@click.option("--objects", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="STAGE's objects_features.h5 (<video>_<timestamp>_features/_boxes/_cls_prob); object class = "
                   "argmax of cls_prob without its background column 0, score = that probability.")
@click.option("--object-classes", "object_names", default=None, show_default=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Object class names, one a line in cls_prob column order without background "
                   "(default: object_<column>).")
@click.option("--split", default=None, show_default=True,
              help="Split name for STAGE layouts (default: the file or directory name).")
@click.option("--label-map", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="pbtxt naming the label ids of a STAGE file (default: every column, names class_<id>).")
@click.option("--label-columns", default="background-first", show_default=True,
              type=click.Choice(["background-first", "label-map"]),
              help="STAGE label columns: background-first (the releases: column 0 background, column c = id c; "
                   "with --label-map only its ids are kept) or label-map (column j = the j-th id of --label-map, "
                   "else ids 1..L).")
@click.option("--backbone", default=None, show_default=True,
              help="Group name for the imported STAGE features (default: stage_i3d / stage_slowfast).")
@click.option("--detected", is_flag=True, default=False, show_default=True,
              help="STAGE boxes are detections (actor_is_gt=False) rather than ground truth.")
@click.option("--no-progress", is_flag=True, default=False, show_default=True, help="Hide the progress bar.")
def import_cmd(src, store, layout, objects, object_names, split, label_map, label_columns, backbone, detected,
               no_progress):
    """Build STORE from SRC (an HDF5 file, or STAGE's I3D actors directory). STAGE imports commit
    video by video: rerunning a killed import resumes it."""
    from stagecache.pipelines.tools.cache import import_h5

    try:
        got = import_h5(src, store, layout=layout, split=split, label_map=label_map, label_columns=label_columns,
                        backbone=backbone, boxes_are_gt=not detected, objects=objects, object_names=object_names,
                        progress=not no_progress, log=click.echo)
    except UserError as e:
        _fail(e)
    click.echo(f"imported {src} ({got} layout) into {store}")


@cache_cli.command("compact")
@click.argument("store")
@click.option("--target-mb", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Size of the merged fragments in MiB.")
@click.option("--stale-minutes", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Uncommitted fragments of dead writers older than this are deleted (a live writer's, "
                   "known by its lock, never are; fsspec stores have no locks: age alone decides).")
@click.option("--dry-run", is_flag=True, default=False, show_default=True, help="Only report what would be done.")
def compact_cmd(store, target_mb, stale_minutes, dry_run):
    """Merge small fragments of STORE and remove leftovers. Live writers of a local store are safe
    (their files are left alone); on fsspec stores run it when no writer is active."""
    from stagecache.extract.store import compact

    try:
        rep = compact(store, target_bytes=target_mb << 20, stale_seconds=stale_minutes * 60,
                      dry_run=dry_run, log=click.echo)
    except StoreError as e:
        _fail(e)
    click.echo(json.dumps(rep))
