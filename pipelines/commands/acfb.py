"""`write-bank`: ACAR-Net's actor-context feature bank into feature stores."""
from __future__ import annotations

import click

from stagecache.pipelines.commands.options import BOXES


@click.command(context_settings={"show_default": True})
@click.option("--run", "run_dir", required=True, help="Run directory of a bank-free acar head (train-head --head acar).")
@click.option("--store", "stores", required=True, multiple=True,
              help="Feature store to write the bank into; repeat for the train and the val store.")
@click.option("--group", default="acfb", help="Name of the derived store group (pass it to train-head --bank-group).")
@click.option("--boxes", type=BOXES, default="gt+proposals",
              help="Actors whose first-order maps are stored (others get zeros and are refused by training).")
@click.option("--score-threshold", default=0.8, help="Minimum proposal score of the stored actors.")
@click.option("--checkpoint", default="best.pt", help="Checkpoint file in the run directory.")
@click.option("--batch-size", default=64, help="Keyframes per forward pass.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def write_bank_cli(run_dir, stores, group, boxes, score_threshold, checkpoint, batch_size, device, no_progress):
    """Write the first-order actor-context relation maps of a trained acar head into each store
    (ACAR-Net Sec. 3.3, stage two of the ACFB flow); then train with --head-arg bank=true --bank-group."""
    from stagecache.pipelines.training.acfb import write_relation_bank

    for store in stores:
        try:
            s = write_relation_bank(run_dir, store, group, boxes=boxes, score_threshold=score_threshold,
                                    checkpoint=checkpoint, device=device, batch_size=batch_size,
                                    progress=not no_progress)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{s['store']}: {s['group']}/actor_maps {s['shape']}, {s['actors_written']} actors")
