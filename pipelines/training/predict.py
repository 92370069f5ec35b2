"""`predict`: a trained head (a train-head run, or an official STAGE checkpoint) over any store,
to an AVA predictions CSV."""
from __future__ import annotations

from pathlib import Path

from stagecache.pipelines.training import losses
from stagecache.pipelines.training.run_dir import load_trained, write_predictions_csv
from stagecache.pipelines.training.run_eval import detections, run_head
from stagecache.pipelines.training.predict_args import PredictArgs  # also imported from here (no torch there)
from stagecache.pipelines.training.split import SplitSpec, open_run_splits
from stagecache.pipelines.training.steps import SplitContext, resolve_device


def predict(args: PredictArgs) -> Path:
    """A trained head over any store, to an AVA predictions CSV."""
    device = resolve_device(args.device)
    if Path(args.run_dir).is_file():  # an official STAGE checkpoint (pipelines/training/init_from.py)
        from stagecache.pipelines.training.init_from import official_predictor

        head, cfg = official_predictor(args.run_dir, args.store, device)
    else:
        head, cfg = load_trained(args.run_dir, device, args.checkpoint)
    [data] = open_run_splits(args.run_dir, cfg, head, [SplitSpec(args.store, "predict", args.boxes, args.score_threshold)],
                             device, memory_budget=args.memory_budget, split_source=args.split_source)
    tables = data.tables
    split = SplitContext.of(data, float(cfg["temporal_radius"]), device, amp=True)  # resident or streamed
    rows, logits = run_head(head, split, batch_size=args.batch_size, progress=True)
    pose_cols = losses.pose_columns(cfg["label_ids"], cfg["pose_ids"])
    score = losses.scores(logits, cfg["loss"], pose_cols).numpy()  # (N, L)
    if args.score == "product":  # GT boxes have score 1: unchanged
        score = score * split.graph.actor_score.cpu().numpy()[rows.numpy()][:, None]
    ids = cfg["label_ids"]
    det = detections(split, rows, score, ids, list(range(len(ids))))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions_csv(out, det, tables)
    return out
