"""`demo`: the whole project on built-in synthetic data, in minutes on a laptop CPU.

1. Render a small synthetic AVA-format video dataset (extract.synthetic): videos, GT, proposals,
   objects, label map, excluded timestamps.
2. `extract features` on it with a RANDOMLY INITIALISED SlowFast R50 (no weights can be
   downloaded here): the pipeline runs for real, the features mean nothing.
3. Train `linear` and `stage` on those stores and evaluate them (frame-mAP, official protocol).
4. Write a feature-level synthetic store (features drawn so the relations hold) and run a small
   ablation on it: linear, STAGE, STAGE w/o box proximity, STAGE w/o temporal links; print the
   table and where the plots are.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml


@dataclass
class DemoArgs:
    out: str = "demo_out"
    seed: int = 0
    videos: int = 3  # per split
    seconds: int = 10  # per video: keyframes 902 .. 900 + seconds - 2
    short_side: int = 96  # frames are resized to this short side before the backbone (AVA: 256)
    extract_epochs: int = 5
    feature_videos: int = 16  # train videos of the feature-level store (val: a third)
    keyframes_per_video: int = 30
    ablation_epochs: int = 8
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        for name in ("videos", "seconds", "short_side", "extract_epochs", "feature_videos",
                     "keyframes_per_video", "ablation_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seconds < 5:
            raise ValueError("seconds must be >= 5 (keyframes need 2 s of video on each side)")


def _say(msg: str) -> None:
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def run_demo(args: DemoArgs) -> dict:
    from extract.features import ExtractArgs, run_extract
    from extract.synthetic_store import make_feature_store
    from extract.synthetic_video import make_video_dataset
    from pipelines.ablate import AblateArgs, ablate
    from pipelines.train import TrainArgs, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(args), indent=2))
    t_start = time.perf_counter()
    report: dict = {"out": str(out)}

    _say("1/4 synthetic AVA-format videos")
    data = out / "data"
    if not (data / "dataset.json").exists():
        make_video_dataset(data, seed=args.seed, n_videos=args.videos, seconds=args.seconds)
    ann = data / "annotations"

    _say("2/4 extract features (slowfast_r50, RANDOM weights: the features are meaningless, the pipeline is real)")
    stores = {}
    for split in ("train", "val"):
        stores[split] = out / "cache" / f"{split}.zarr"
        summary = run_extract(ExtractArgs(
            split=split, videos=str(data / "videos"), label_map=str(ann / "label_map.pbtxt"), dataset="synthetic",
            out=str(stores[split]), annotations=str(ann / f"{split}.csv"),
            proposals=str(ann / f"{split}_proposals.csv"), objects="precomputed",
            objects_file=str(ann / f"{split}_objects.csv"), object_classes=str(ann / "object_classes.txt"), backbone="slowfast_r50", random_init=True,
            sampling_overrides={"short_side": args.short_side}, time_offset=900.0, batch_size=4, num_workers=1,
            device="cpu" if args.device == "auto" else args.device, progress=args.progress,
        ))
        report[f"extract_{split}"] = summary
        if summary.get("failed"):
            raise RuntimeError(f"extraction of {split} failed for {summary['failed']} video(s): {summary}")

    _say("3/4 train linear and stage on the extracted stores")
    report["video_runs"] = {}
    for head in ("linear", "stage"):
        run_dir = out / "runs" / f"video-{head}"
        s = train(TrainArgs(
            train_store=str(stores["train"]), val_store=str(stores["val"]), head=head, out_dir=str(run_dir),
            epochs=args.extract_epochs, batch_size=8, lr=1e-3, val_score_threshold=0.5, early_stop=100,
            seed=args.seed, device=args.device, progress=args.progress, resume=(run_dir / "last.pt").exists(),
        ))
        report["video_runs"][head] = s["best_val_map"]

    _say("4/4 ablation on a feature-level synthetic store (features where the relations hold)")
    fs = out / "cache" / "features"
    make_feature_store(fs / "train.zarr", split="train", seed=args.seed, n_videos=args.feature_videos,
                       keyframes_per_video=args.keyframes_per_video)
    make_feature_store(fs / "val.zarr", split="val", seed=args.seed + 1, n_videos=max(2, args.feature_videos // 3),
                       keyframes_per_video=args.keyframes_per_video, first_video=1000)
    spec = {
        "name": "demo",
        "reference": "STAGE Table 8 structure on the synthetic relational store",
        "seeds": [args.seed],
        "train": {"epochs": args.ablation_epochs, "batch_size": 16, "lr": 1e-3, "val_score_threshold": 0.5,
                  "early_stop": 100, "device": args.device},
        "baseline": "linear",
        "configs": [
            {"name": "linear", "label": "linear (frozen-backbone baseline)", "head": "linear"},
            {"name": "stage", "label": "STAGE", "head": "stage"},
            {"name": "no-proximity", "label": "STAGE w/o boxes proximity", "head": "stage",
             "head_args": {"proximity": False}},
            {"name": "no-temporal", "label": "STAGE w/o temporal connections", "head": "stage",
             "head_args": {"temporal": False}},
        ],
    }
    spec_file = out / "demo_ablation.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = ablate(AblateArgs(train_store=str(fs / "train.zarr"), val_store=str(fs / "val.zarr"),
                               out=str(out / "ablation"), spec_file=str(spec_file), progress=args.progress))
    report["ablation"] = result
    report["seconds"] = time.perf_counter() - t_start
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def print_report(report: dict, echo=print) -> None:
    out = Path(report["out"])
    echo("")
    echo("stagecache demo: done in {:.0f} s".format(report["seconds"]))
    echo("")
    echo("Stage 1 (random-init SlowFast R50 on synthetic videos; meaningless features, real pipeline):")
    for split in ("train", "val"):
        s = report[f"extract_{split}"]
        echo(f"  {split}: " + ", ".join(f"{k} {s[k]}" for k in ("videos", "done", "failed", "keyframes", "boxes") if k in s))
    for head, m in report["video_runs"].items():
        echo(f"  {head:>6} val frame-mAP {m * 100:.1f}")
    echo("")
    echo("Ablation on the synthetic relational store:")
    md = out / "ablation" / "results.md"
    if md.exists():
        echo(md.read_text())
    echo(f"Results: {out / 'ablation'} (results.csv, results.md, gain_*.png)")
    echo(f"Runs:    {out / 'runs'} and {out / 'ablation' / 'runs'}")
    echo(f"Stores:  {out / 'cache'}   (inspect with: cache info {out / 'cache' / 'train.zarr'})")
