"""`demo`: the whole project on built-in synthetic data, in minutes on a laptop CPU.

1. Render a small synthetic AVA-format video dataset (extract.synthetic): videos, GT, proposals,
   objects, label map, excluded timestamps.
2. `extract features` on it with a RANDOMLY INITIALISED SlowFast R50 (no weights can be
   downloaded here): the pipeline runs for real, the features mean nothing.
3. Train `linear` and `stage` on those stores and evaluate them (frame-mAP, official protocol).
4. Write a feature-level synthetic store (features drawn so the relations hold) and run a small
   ablation on it: linear, STAGE, STAGE w/o box proximity, STAGE w/o temporal links; print the
   table and where the plots are.

`--dataset jhmdb` (`run_tube_demo`): the same path for JHMDB-21-format data (extract.synthetic.tubes:
GT pickle + Frames/ folders, `videos` per class of at most 12 frames): extraction of
split 1 train/test, `linear` and `stage` (actors only, 2 layers, 4 heads, softmax) trained and
evaluated with frame-mAP and video-mAP (pipelines/evaluation/tubes.py), then the same two heads on a
feature-level store of the same layout (`feature_videos` per class, `keyframes_per_video` frames)
where the synthetic rule is relational. Tubes shorter than min(15, frames) are dropped (ACT: 15).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from stagecache.pipelines.tools.demo_multisports import print_multisports_report, run_multisports_demo


# the keys of DEMOS, which is defined after the demos (test_options checks)
DEMO_DATASETS = ("ava", "jhmdb", "multisports")


@dataclass
class DemoArgs:
    """Arguments of `demo`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    out: str = field(default="demo_out", metadata={"help": "Output directory (data, stores, runs, ablation)."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic data and the runs."})
    videos: int = field(default=3, metadata={"help": "Synthetic videos per split."})
    seconds: int = field(default=10, metadata={
        "help": "Seconds per synthetic video (keyframes 902 .. 900+seconds-2)."})
    short_side: int = field(default=96, metadata={"help": "Frame short side fed to the backbone (AVA uses 256)."})
    extract_epochs: int = field(default=5, metadata={"help": "Epochs of the heads trained on the extracted stores."})
    feature_videos: int = field(default=16, metadata={
        "help": "Train videos of the feature-level store used by the ablation."})
    keyframes_per_video: int = field(default=30, metadata={"help": "Keyframes per video of the feature-level store."})
    ablation_epochs: int = field(default=8, metadata={"help": "Epochs per ablation run."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    progress: bool = field(default=True, metadata={"help": "Progress bars."})
    dataset: str = field(default="ava", metadata={
        "help": "jhmdb: JHMDB-format synthetic data (GT pickle + frame folders; --videos per class, "
                "<= 12 frames, --feature-videos per class x --keyframes-per-video frames at feature level), "
                "frame-mAP and video-mAP. multisports: MultiSports-format data (--videos per sport), its own "
                "evaluator (pipelines/tools/demo_multisports.py).", "choices": DEMO_DATASETS})

    def __post_init__(self):
        if self.dataset not in DEMOS:
            raise ValueError(f"unknown demo dataset {self.dataset!r}; valid: {', '.join(DEMOS)}")
        for name in ("videos", "seconds", "short_side", "extract_epochs", "feature_videos",
                     "keyframes_per_video", "ablation_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seconds < 5:
            raise ValueError("seconds must be >= 5 (keyframes need 2 s of video on each side)")


def _say(msg: str) -> None:
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def run_demo(args: DemoArgs) -> dict:
    if args.dataset != "ava":
        return DEMOS[args.dataset](args)
    from stagecache.extract.features import run_extract
    from stagecache.extract.features_args import ExtractArgs
    from stagecache.extract.synthetic import make_feature_store, make_video_dataset
    from stagecache.pipelines.ablation.sweep import AblateArgs, ablate
    from stagecache.pipelines.training.train import TrainArgs, train

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


def text_table(header: list[str], rows: list[list], indent: str = "  ") -> str:
    """A plain-text table for the console: the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    line = lambda r: indent + "  ".join(c.ljust(w) if j == 0 else c.rjust(w)  # noqa: E731
                                        for j, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(cells[0]), indent + "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _count(v) -> int:
    return len(v) if isinstance(v, (list, tuple, dict)) else int(v or 0)  # the summary lists failed videos


def ablation_table(result: dict) -> str:
    """The ablation's configurations: val frame-mAP (%, mean ± std over seeds) overall and per class group."""
    from stagecache.pipelines.ablation.report import GROUP_ORDER, by_config, fmt

    rep = result["report"]
    groups = [g for g in GROUP_ORDER if g in rep["groups"]] + [g for g in rep["groups"] if g not in GROUP_ORDER]
    rows = []
    for cfg, rs in by_config(rep["rows"]).items():
        done = sum(r["status"] == "done" for r in rs)
        rows.append([rs[0]["label"] or cfg, f"{done}/{len(rs)}", fmt([r["val_map"] for r in rs]),
                     *(fmt([r["groups"].get(g, float("nan")) for r in rs]) for g in groups)])
    return text_table(["configuration", "seeds", "mAP", *groups], rows)


def print_report(report: dict, echo=print) -> None:
    if report.get("dataset") == "multisports":
        return print_multisports_report(report, echo)
    if report.get("dataset", "ava") != "ava":
        return print_tube_report(report, echo)
    out = Path(report["out"])
    echo("")
    echo("stagecache demo: done in {:.0f} s".format(report["seconds"]))
    echo("")
    echo("Stage 1: features of the synthetic videos (random-init SlowFast R50: meaningless features, real pipeline)")
    echo(text_table(["split", "videos", "keyframes", "boxes", "objects", "failed"],
                    [[split, s.get("videos", 0), s.get("keyframes", 0), s.get("boxes", 0), s.get("objects", 0),
                      _count(s.get("failed"))] for split in ("train", "val") for s in [report[f"extract_{split}"]]]))
    echo("")
    echo("Stage 2: heads trained on those features")
    echo(text_table(["head", "val frame-mAP (%)"], [[h, f"{m * 100:.1f}"] for h, m in report["video_runs"].items()]))
    echo("")
    echo("Ablation on the synthetic relational store (val frame-mAP %, best epoch; per class group):")
    echo(ablation_table(report["ablation"]))
    echo("")
    abl = out / "ablation"
    plots = report["ablation"]["report"].get("plots", [])
    echo(f"Tables:  {abl / 'results.md'} and {abl / 'results.csv'}")
    if plots:
        echo(f"Plots:   per-class AP gain over {report['ablation']['report']['baseline']}:")
        for p in plots:
            echo(f"           {abl / p}")
    echo(f"Runs:    {out / 'runs'} and {abl / 'runs'} (each: config.json, train.log, curves.png, per_class_ap.json)")
    echo(f"Stores:  {out / 'cache'}   (inspect with: cache info {out / 'cache' / 'train.zarr'})")


# JHMDB-21's STAGE setting (STAGE paper Sec. 4 / Table 5: actors only, no objects, 2 layers, 4 heads);
# time_step 1 / 30 s links consecutive keyframes of a stride-1 store (a choice: the paper gives no window).
TUBE_STAGE_ARGS = {"use_objects": False, "num_layers": 2, "num_heads": 4, "time_step": 1 / 30}


def _tube_run(train_store, val_store, run_dir: Path, head: str, gt, *, epochs: int, args: DemoArgs,
              min_tube_length: int) -> dict:
    from stagecache.extract import ava_io
    from stagecache.pipelines.training.train import TrainArgs, train
    from stagecache.pipelines.evaluation.tubes import evaluate_split

    train(TrainArgs(train_store=str(train_store), val_store=str(val_store), head=head,
                    head_args=TUBE_STAGE_ARGS if head == "stage" else {}, out_dir=str(run_dir), epochs=epochs,
                    batch_size=8, lr=1e-3, loss="softmax", train_boxes="gt", val_boxes="gt", early_stop=100,
                    seed=args.seed, device=args.device, progress=args.progress,
                    resume=(run_dir / "last.pt").exists()))
    r = evaluate_split(gt, 1, ava_io.read_predictions(run_dir / "val_predictions.csv"), fps=30.0,
                       min_tube_length=min_tube_length)
    return {"frame_mAP": r.frame_map, **{f"video_mAP@{t:g}": r.video_map(t) for t in r.video_ap}}


def run_tube_demo(args: DemoArgs) -> dict:
    from stagecache.extract.datasets.tubes_pkl import read_tube_pickle
    from stagecache.extract.features import run_extract
    from stagecache.extract.features_args import ExtractArgs
    from stagecache.extract.synthetic.tubes import make_tube_dataset, make_tube_feature_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(args), indent=2))
    t_start = time.perf_counter()
    report: dict = {"out": str(out), "dataset": args.dataset}
    n_frames = args.keyframes_per_video
    n_render = min(n_frames, 12)  # rendered videos stay short: every frame is a backbone clip on the CPU

    _say("1/3 synthetic JHMDB-format data (JHMDB-GT.pkl + Frames/<class>/<clip>/%05d.png)")
    data = out / "data"
    pkl = make_tube_dataset(data, dataset="jhmdb", seed=args.seed, videos_per_class=args.videos,
                            n_frames=n_render, height=64, width=80)
    gt = read_tube_pickle(pkl)

    _say("2/3 extract features of split 1 (slowfast_r50, RANDOM weights), train linear and stage, "
         "frame-mAP and video-mAP")
    stores = {}
    for side in ("train", "test"):
        stores[side] = out / "cache" / f"{side}1.zarr"
        summary = run_extract(ExtractArgs(
            split=f"{side}1", videos=str(data), label_map=None, dataset="jhmdb", annotations=str(pkl),
            out=str(stores[side]), backbone="slowfast_r50", random_init=True,
            sampling_overrides={"short_side": args.short_side}, batch_size=4, num_workers=1,
            device="cpu" if args.device == "auto" else args.device, progress=args.progress))
        report[f"extract_{side}1"] = summary
        if summary.get("failed"):
            raise RuntimeError(f"extraction of {side}1 failed for {summary['failed']} video(s): {summary}")
    report["video_runs"] = {h: _tube_run(stores["train"], stores["test"], out / "runs" / f"video-{h}", h, gt,
                                         epochs=args.extract_epochs, args=args, min_tube_length=min(15, n_render))
                            for h in ("linear", "stage")}

    _say("3/3 linear vs stage on a feature-level store of the same layout (relational rule)")
    fdata = out / "features"
    fpkl = make_tube_dataset(fdata, dataset="jhmdb", seed=args.seed, videos_per_class=args.feature_videos,
                             n_frames=n_frames, render=False)
    fs = {s: make_tube_feature_store(fpkl, fdata / f"{s}.zarr", dataset="jhmdb", split=s, seed=args.seed)
          for s in ("train1", "test1")}
    fgt = read_tube_pickle(fpkl)
    report["feature_runs"] = {h: _tube_run(fs["train1"], fs["test1"], out / "runs" / f"features-{h}", h, fgt,
                                           epochs=args.ablation_epochs, args=args,
                                           min_tube_length=min(15, n_frames))
                              for h in ("linear", "stage")}
    report["seconds"] = time.perf_counter() - t_start
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def print_tube_report(report: dict, echo=print) -> None:
    out = Path(report["out"])
    echo("")
    echo(f"stagecache demo ({report['dataset']}): done in {report['seconds']:.0f} s")
    for title, key in (("Extracted features (random-init SlowFast R50; meaningless features, real pipeline)",
                        "video_runs"), ("Feature-level store (relational rule)", "feature_runs")):
        echo("")
        echo(f"{title}, split 1 test:")
        echo("  head    frame-mAP  video-mAP@0.2  @0.5  @0.75")
        for head, m in report[key].items():
            echo(f"  {head:<7} {m['frame_mAP'] * 100:9.1f}  {m['video_mAP@0.2'] * 100:13.1f}  "
                 f"{m['video_mAP@0.5'] * 100:4.1f}  {m['video_mAP@0.75'] * 100:5.1f}")
    echo("")
    echo(f"Runs:    {out / 'runs'}")
    echo(f"Stores:  {out / 'cache'} and {out / 'features'}")


DEMOS = {"ava": run_demo, "jhmdb": run_tube_demo, "multisports": run_multisports_demo}
