"""`write-bank`: ACAR-Net's actor-context feature bank into feature stores."""
from __future__ import annotations

import click

from stagecache.pipelines.commands.options import dataclass_options
from stagecache.pipelines.training.acfb_args import WriteBankArgs


@click.command(context_settings={"show_default": True})
@dataclass_options(WriteBankArgs)
def write_bank_cli(**kw):
    """Write the first-order actor-context relation maps of a trained acar head into each store
    (ACAR-Net Sec. 3.3, stage two of the ACFB flow); then train with --head-arg bank=true --bank-group."""
    from stagecache.pipelines.training.acfb import check_stores, write_relation_bank

    try:
        args = WriteBankArgs(**kw)
    except ValueError as e:  # as write_relation_bank's own refusals below: one line, exit 1
        raise click.ClickException(str(e)) from None
    check_stores(args.stores)  # all of them before writing into any
    for store in args.stores:
        try:
            s = write_relation_bank(args.run_dir, store, args.group, boxes=args.boxes,
                                    score_threshold=args.score_threshold, checkpoint=args.checkpoint,
                                    device=args.device, batch_size=args.batch_size, progress=args.progress,
                                    memory_budget=args.memory_budget, split_source=args.split_source)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{s['store']}: {s['group']}/actor_maps {s['shape']}, {s['actors_written']} actors")
