"""`demo --dataset multisports`: synthetic MultiSports-format data (extract.synthetic.multisports:
multisports_GT.pkl, rawframes/<sport>/<clip>/%05d.jpg, MultiSports_box/*.pkl person boxes) through
`extract features --dataset multisports` (random-init SlowFast R50, keyframes every FRAME_STRIDE
frames), `train-head --loss softmax` (MultiSports gives each person one action at a time) and
MultiSports' own evaluation (frame-mAP@0.5, video-mAP@0.2 / @0.5 / @0.1:0.9). CPU, well under a minute."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

FRAME_STRIDE = 2  # every other frame: half the backbone clips on the CPU
MIN_TUBE_LENGTH = 6  # the synthetic videos are 12..16 frames (MultiSports': 15 of ~750)


def run_multisports_demo(args) -> dict:
    """args: the `demo` command's DemoArgs (out, seed, videos per sport, short_side, extract_epochs, device,
    progress)."""
    from stagecache.extract import ava_io
    from stagecache.extract.datasets.multisports import read_multisports_gt
    from stagecache.extract.features import run_extract
    from stagecache.extract.features_args import ExtractArgs
    from stagecache.extract.synthetic.multisports import make_multisports_dataset
    from stagecache.pipelines.evaluation.multisports import evaluate_multisports
    from stagecache.pipelines.training.train import TrainArgs, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(args), indent=2))
    t_start = time.perf_counter()
    report: dict = {"out": str(out), "dataset": "multisports"}
    print("\n== 1/3 synthetic MultiSports-format data", file=sys.stderr, flush=True)
    data = out / "data"
    pkl = make_multisports_dataset(data, seed=args.seed, videos_per_sport=args.videos, n_frames=(12, 16),
                                   height=48, width=64)
    print("\n== 2/3 extract features (slowfast_r50, RANDOM weights), train-head --loss softmax", file=sys.stderr,
          flush=True)
    device = "cpu" if args.device == "auto" else args.device
    stores = {}
    for side, boxes in (("train", "train.pkl"), ("test", "test.pkl")):
        stores[side] = out / "cache" / f"{side}1.zarr"
        s = run_extract(ExtractArgs(split=f"{side}1", videos=str(data), dataset="multisports", annotations=str(pkl),
                                    proposals=str(data / "MultiSports_box" / boxes), out=str(stores[side]),
                                    random_init=True, frame_stride=FRAME_STRIDE,
                                    sampling_overrides={"short_side": args.short_side, "frames": 4},
                                    batch_size=8, num_workers=1, device=device, progress=args.progress))
        if s.get("failed"):
            raise RuntimeError(f"extraction of {side}1 failed: {s['failed']}")
        report[f"extract_{side}1"] = {k: s[k] for k in ("videos", "keyframes", "boxes")}
    gt = read_multisports_gt(pkl)
    runs = {}
    for head in ("linear", "stage"):
        run_dir = out / "runs" / head
        train(TrainArgs(train_store=str(stores["train"]), val_store=str(stores["test"]), head=head,
                        head_args={"use_objects": False, "num_layers": 1} if head == "stage" else {},
                        out_dir=str(run_dir), epochs=args.extract_epochs, batch_size=16, lr=1e-3, loss="softmax",
                        train_boxes="gt+proposals", val_boxes="proposals", early_stop=100, seed=args.seed,
                        device=device, progress=args.progress, resume=(run_dir / "last.pt").exists()))
        print(f"\n== 3/3 MultiSports evaluation of {head}", file=sys.stderr, flush=True)
        r = evaluate_multisports(gt, ava_io.read_predictions(run_dir / "val_predictions.csv"),
                                 frame_stride=FRAME_STRIDE, min_tube_length=MIN_TUBE_LENGTH)
        runs[head] = {"frame_mAP@0.5": r.frame_map, **{f"video_mAP@{t:g}": r.video_map(t) for t in r.video_ap},
                      "video_mAP@0.1:0.9": r.video_map_all}
    report["runs"] = runs
    report["seconds"] = time.perf_counter() - t_start
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def print_multisports_report(report: dict, echo=print) -> None:
    out = Path(report["out"])
    echo("")
    echo(f"stagecache demo (multisports): done in {report['seconds']:.0f} s")
    echo("Extracted features (random-init SlowFast R50: meaningless features, real pipeline); MultiSports' "
         f"evaluator, keyframes every {FRAME_STRIDE} frames, tubes of >= {MIN_TUBE_LENGTH} frames:")
    echo("  head     frame-mAP@0.5  video-mAP@0.2  @0.5  @0.1:0.9")
    for head, m in report["runs"].items():
        echo(f"  {head:<8} {m['frame_mAP@0.5'] * 100:13.1f}  {m['video_mAP@0.2'] * 100:13.1f}  "
             f"{m['video_mAP@0.5'] * 100:4.1f}  {m['video_mAP@0.1:0.9'] * 100:8.1f}")
    echo(f"Runs:    {out / 'runs'}")
    echo(f"Stores:  {out / 'cache'}")
