"""`evaluate`: official-protocol AVA frame-mAP of a predictions CSV (logic in pipelines/evaluate.py)."""
from __future__ import annotations

import click

from pipelines.evaluate import DEFAULT_LABEL_MAP, EvaluateArgs, run_evaluate


@click.command("evaluate")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Ground-truth CSV video,timestamp,x1,y1,x2,y2,action_id[,person_id].")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Predictions CSV video,timestamp,x1,y1,x2,y2,action_id,score.")
@click.option("--label-map", default=str(DEFAULT_LABEL_MAP), show_default=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Label map pbtxt; only its classes are evaluated (default: the 60-class ActivityNet list).")
@click.option("--excluded", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="Excluded-timestamps CSV video,timestamp; GT and detections there are ignored.")
@click.option("--no-cap", is_flag=True, default=False, show_default=True,
              help="Keep every detection instead of the official top 50 (box, class) per keyframe.")
@click.option("--iou", default=0.5, show_default=True, type=float, help="IoU threshold for a true positive.")
@click.option("--json", "json_path", default=None, show_default=True, type=click.Path(dir_okay=False),
              help="Write {mAP, per_class, groups} JSON here (config saved beside it).")
@click.option("--plots", default=None, show_default=True, type=click.Path(file_okay=False),
              help="Directory for PR-curve PNGs (none when unset).")
@click.option("--plot-by", default="class", show_default=True, type=click.Choice(["class", "group"]),
              help="One PR plot per class, or per class group.")
@click.option("--groups", default=None, show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="Class-groups JSON {group: [ids]} for non-AVA label maps (AVA grouping is built in).")
@click.option("--single-label", is_flag=True, default=False, show_default=True,
              help="Single-label datasets (JHMDB-21, UCF101-24): each GT box must have one label; no cap.")
def evaluate_cli(gt, pred, label_map, excluded, no_cap, iou, json_path, plots, plot_by, groups, single_label):
    """Frame-mAP (ActivityNet AVA protocol) of PRED against GT."""
    try:
        args = EvaluateArgs(gt=gt, pred=pred, label_map=label_map, excluded=excluded, no_cap=no_cap, iou=iou,
                            json_path=json_path, plots=plots, plot_by=plot_by, groups=groups,
                            single_label=single_label)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    run_evaluate(args, echo=click.echo)
