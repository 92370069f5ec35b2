"""`evaluate`: AVA frame-mAP of a predictions CSV, official / PySlowFast / MMAction2 protocol (logic in pipelines/evaluation/ava.py)."""
from __future__ import annotations

import click

from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP, PROTOCOLS, EvaluateArgs, run_evaluate


@click.command("evaluate")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Ground-truth CSV video,timestamp,x1,y1,x2,y2,action_id[,person_id].")
@click.option("--pred", "pred", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Predictions CSV video,timestamp,x1,y1,x2,y2,action_id,score "
                   "(jhmdb/ucf24: repeat, one per --split).")
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
@click.option("--dataset", default="ava", show_default=True, type=click.Choice(["ava", "jhmdb", "ucf24"]),
              help="jhmdb / ucf24: --gt is the ACT GT pickle; frame-mAP and video-mAP (pipelines/evaluation/tubes.py).")
@click.option("--split", "tube_splits", multiple=True, type=int, help="jhmdb/ucf24: split of each --pred (default 1).")
@click.option("--fps", default=None, type=float, show_default="jhmdb 30, ucf24 25 (as extraction)",
              help="jhmdb/ucf24: frame rate that turned frames into timestamps at extraction.")
@click.option("--min-tube-length", default=15, show_default=True, type=int,
              help="jhmdb/ucf24: linked tubes shorter than this many frames are dropped (ACT: 15).")
@click.option("--protocol", default="official", show_default=True, type=click.Choice(list(PROTOCOLS)),
              help="Whose evaluator to reproduce: ActivityNet's official one, PySlowFast's or MMAction2's "
                   "(differences: docs/EVALUATION.md).")
def evaluate_cli(gt, pred, label_map, excluded, no_cap, iou, json_path, plots, plot_by, groups, single_label,
                 dataset, tube_splits, fps, min_tube_length, protocol):
    """Frame-mAP of PRED against GT (ActivityNet AVA protocol unless --protocol)."""
    if dataset != "ava":  # JHMDB-21 / UCF101-24 (pipelines/evaluation/tubes.py)
        from stagecache.pipelines.evaluation.tubes import TubeEvalArgs, run_tube_eval
        try:
            targs = TubeEvalArgs(dataset=dataset, gt=gt, preds=list(pred), splits=list(tube_splits) or [1], fps=fps,
                                 iou=iou, min_tube_length=min_tube_length, json_path=json_path)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        run_tube_eval(targs, echo=click.echo)
        return
    if len(pred) != 1:
        raise click.BadParameter("AVA evaluation takes one --pred file", param_hint="--pred")
    pred = pred[0]
    try:
        args = EvaluateArgs(gt=gt, pred=pred, label_map=label_map, excluded=excluded, no_cap=no_cap, iou=iou,
                            json_path=json_path, plots=plots, plot_by=plot_by, groups=groups,
                            single_label=single_label, protocol=protocol)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    run_evaluate(args, echo=click.echo)
