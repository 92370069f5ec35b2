"""`predict`: a trained head (a train-head run, or an official STAGE checkpoint) over any store,
to an AVA predictions CSV."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stagecache.core.boxes import BOX_SETS, check_box_set
from stagecache.pipelines.training import losses
from stagecache.pipelines.training.run_dir import load_trained, write_predictions_csv
from stagecache.pipelines.training.run_eval import detections, run_head
from stagecache.pipelines.training.split import SplitSpec, open_run_splits
from stagecache.pipelines.training.steps import SplitContext, resolve_device


@dataclass
class PredictArgs:
    """Arguments of `predict`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    run_dir: str = field(metadata={
        "help": "Run directory of train-head, or an official STAGE checkpoint file (.pth: stage variant=official).",
        "option": "--run"})
    store: str = field(metadata={"help": "Feature store to predict on."})
    out: str = field(metadata={"help": "Output AVA predictions CSV."})
    boxes: str = field(default="proposals", metadata={"help": "Actor boxes to predict on.", "choices": BOX_SETS})
    score_threshold: float = field(default=0.8, metadata={"help": "Minimum proposal score."})
    checkpoint: str = field(default="best.pt", metadata={"help": "Checkpoint file in the run directory."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    score: str = field(default="class", metadata={
        "help": "Score of a (box, class) row: the class probability as the head gives it (class; what train-head's "
                "val predictions hold), or times the proposal's detection score (product, as ACT / MOC tubelet "
                "scores combine box and class).", "choices": ["class", "product"]})
    batch_size: int = field(default=64, metadata={
        "help": "Keyframes per forward pass (stage variant=official links neighbouring batch positions: "
                "6 reproduces the official test.py).", "range": {"min": 1}})

    def __post_init__(self):
        check_box_set(self.boxes)


def predict(args: PredictArgs) -> Path:
    """A trained head over any store, to an AVA predictions CSV."""
    device = resolve_device(args.device)
    if Path(args.run_dir).is_file():  # an official STAGE checkpoint (pipelines/training/init_from.py)
        from stagecache.pipelines.training.init_from import official_predictor

        head, cfg = official_predictor(args.run_dir, args.store, device)
    else:
        head, cfg = load_trained(args.run_dir, device, args.checkpoint)
    [data] = open_run_splits(args.run_dir, cfg, head, [SplitSpec(args.store, "predict", args.boxes, args.score_threshold)],
                             device)
    tables = data.tables
    split = SplitContext(data.graph, float(cfg["temporal_radius"]), device, amp=True, tables=tables)
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
