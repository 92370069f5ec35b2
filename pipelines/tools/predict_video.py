"""`predict-video`: a trained head on one raw video, end to end.

1. Actor boxes per keyframe: a proposals file (rows of this video) or a person detector run on the
   keyframes (`extract.detectors`), written as a proposals CSV.
2. Features: `extract.features.run_extract` on a one-video temporary dataset, with the backbone
   configuration recorded in the run's training store (backbone group attributes), so the features
   match the ones the head was trained on.
3. Predictions: `pipelines.training.predict.predict` on that store -> an AVA predictions CSV.
4. An annotated MP4 (PyAV): every frame within `show_seconds` of a keyframe shows that keyframe's
   boxes and top labels.

Time convention (as `extract`): video_time = AVA timestamp - time_offset.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stagecache.core.boxes import box_keys
from stagecache.extract import ava_io


@dataclass
class PredictVideoArgs:
    """Arguments of `predict-video`; each field's help is its CLI option's (pipelines/commands/options.py)."""

    video: str = field(metadata={"help": "The video file.", "argument": True, "path": {"exists": True, "dir_okay": False}})
    run_dir: str = field(metadata={"help": "train-head run directory (its store's backbone is used).", "option": "--run"})
    out_dir: str = field(metadata={"help": "Output directory (CSV, MP4, proposals.csv, predict_video.json).",
                                   "option": "--out"})
    proposals: str = field(default="", metadata={
        "help": "AVA proposals file (csv/pkl/json) with this video's person boxes."})
    person_detector: str = field(default="", metadata={
        "help": "Person detector name (extract.detectors), e.g. torchvision, instead of --proposals."})
    detector_weights: str = field(default="", metadata={"help": "Weights file of the person detector."})
    detector_random_init: bool = field(default=False, metadata={
        "help": "Random-weight detector: tests and demo ONLY (warns)."})
    person_score: float = field(default=0.8, metadata={"help": "Person detector score threshold."})
    objects: str = field(default="none", metadata={
        "help": "Object detector name (extract.detectors) for heads that use objects."})
    object_weights: str = field(default="", metadata={"help": "Weights file of the object detector."})
    video_name: str = field(default="", metadata={"help": "AVA video id. Default: the file's stem."})
    time_offset: float = field(default=0.0, metadata={
        "help": "video time = AVA timestamp - offset (900 for AVA's trimmed clips)."})
    stride: float = field(default=1.0, metadata={"help": "Seconds between keyframes (detector mode)."})
    start: float | None = field(default=None, metadata={
        "help": "First keyframe timestamp (detector mode). Default: 1 s into the video."})
    end: float | None = field(default=None, metadata={
        "help": "Last keyframe timestamp (detector mode). Default: 1 s before the end."})
    score_threshold: float = field(default=0.0, metadata={"help": "Minimum person-box score given to the head."})
    top_k: int = field(default=3, metadata={"help": "Labels drawn per box."})
    min_score: float = field(default=0.3, metadata={"help": "Labels below this score are not drawn."})
    show_seconds: float = field(default=0.5, metadata={
        "help": "Boxes of a keyframe are drawn on frames within this many seconds of it."})
    backbone_checkpoint: str = field(default="", metadata={
        "help": "Backbone checkpoint. Default: the one recorded in the run's store."})
    backbone_random_init: bool = field(default=False, metadata={
        "help": "Random-weight backbone: tests and demo ONLY (warns)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    keep_temp: bool = field(default=False, metadata={"help": "Keep the temporary one-video dataset and store."})
    trust_pickle: bool = field(default=False, metadata={
        "help": "Load a --proposals pickle and the backbone checkpoint with full unpickling (can run code "
                "in the file: only for files you trust). Default: plain data only, anything else is refused."})

    def __post_init__(self):
        if not Path(self.video).is_file():
            raise ValueError(f"video {self.video} not found")
        if not (Path(self.run_dir) / "best.pt").is_file():
            raise ValueError(f"{self.run_dir}: no best.pt; is it a finished train-head run?")
        if bool(self.proposals) == bool(self.person_detector):
            raise ValueError("give either --proposals or --person-detector")
        if self.proposals and not Path(self.proposals).is_file():
            raise ValueError(f"proposals file {self.proposals} not found")
        if self.stride <= 0 or self.show_seconds < 0 or self.top_k < 1:
            raise ValueError("stride must be > 0, show_seconds >= 0, top_k >= 1")
        if not self.video_name:
            self.video_name = Path(self.video).stem


# ----------------------------------------------------------------------------- video helpers


def video_info(path) -> dict:
    """fps, width, height, duration (seconds) of a video file."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 30)
        dur = float(s.duration * s.time_base) if s.duration else (c.duration or 0) / 1e6
        if dur <= 0:
            dur = sum(1 for _ in c.decode(s)) / fps
        return {"fps": fps, "width": s.codec_context.width, "height": s.codec_context.height, "duration": dur}


def keyframe_times(args: PredictVideoArgs, duration: float) -> np.ndarray:
    """AVA timestamps of the keyframes to predict (detector mode)."""
    start = args.start if args.start is not None else args.time_offset + 1.0
    end = args.end if args.end is not None else args.time_offset + np.floor(duration) - 1.0
    times = np.arange(start, end + 1e-6, args.stride)
    if len(times) == 0:
        raise ValueError(f"{args.video}: no keyframe between {start} and {end} (video of {duration:.2f} s)")
    return times


def detect_people(args: PredictVideoArgs, times: np.ndarray, *, fps: float) -> ava_io.Proposals:
    """Run a person detector on the keyframes at `times` (AVA seconds) of a video of `fps` frames/s."""
    from stagecache.extract.detectors import build_person_detector
    from stagecache.extract.detectors.keyframes import detect_keyframes
    from stagecache.extract.video import open_video

    kw = {"score_thresh": args.person_score}
    if args.detector_weights:
        kw["weights"] = args.detector_weights
    if args.detector_random_init:
        kw["random_init"] = True
    det = build_person_detector(args.person_detector, **kw)
    videos, ts, boxes, scores = [], [], [], []
    # One keyframe per batch, as the detector saw them before it shared the keyframe loop.
    with open_video(args.video, fps=fps, time_offset=args.time_offset) as reader:
        for s, ((d,),) in detect_keyframes((det,), reader, args.video_name, times, batch_size=1):
            n = len(d)
            videos += [args.video_name] * n
            ts += [float(times[s])] * n
            boxes.append(d.box.cpu().numpy().reshape(-1, 4))
            scores.append(d.score.cpu().numpy().reshape(-1))
    return ava_io.Proposals(video=np.asarray(videos, dtype=object), timestamp=np.asarray(ts, dtype=np.float64),
                            box=np.concatenate(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
                            score=np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32))


def video_proposals(args: PredictVideoArgs) -> ava_io.Proposals:
    props = ava_io.read_proposals(args.proposals, trust_pickle=args.trust_pickle)
    keep = props.video == args.video_name
    if not keep.any():
        raise ValueError(f"{args.proposals}: no proposals for video {args.video_name!r}")
    return props.select(keep)


# ----------------------------------------------------------------------------- drawing


def _colour(i: int) -> tuple[int, int, int]:
    from stagecache.pipelines.tools.visualize import PALETTE

    h = PALETTE[i % len(PALETTE)].lstrip("#")
    return tuple(int(h[k : k + 2], 16) for k in (0, 2, 4))


def annotate_frame(frame: np.ndarray, boxes: np.ndarray, labels: list[list[tuple[str, float]]]) -> np.ndarray:
    """Boxes (normalised) and their labels drawn on an RGB frame (H, W, 3) uint8."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (float(b[0]) * w, float(b[1]) * h, float(b[2]) * w, float(b[3]) * h)
        c = _colour(i)
        d.rectangle((x1, y1, x2, y2), outline=c, width=2)
        y = y1 + 1
        for name, s in labels[i]:
            text = f"{name} {s:.2f}"
            tw = d.textlength(text)
            d.rectangle((x1, y, x1 + tw + 2, y + 11), fill=c)
            d.text((x1 + 1, y), text, fill=(255, 255, 255))
            y += 11
    return np.asarray(img)


def write_annotated_video(src, dst, preds: ava_io.Predictions, label_names: dict[int, str], *, time_offset: float,
                          top_k: int, min_score: float, show_seconds: float, codec: str = "mpeg4") -> int:
    """Re-encode `src` with each keyframe's boxes and top labels on the frames within show_seconds of
    it (the nearest keyframe wins). Returns the number of frames written."""
    import av

    from stagecache.pipelines.tools.visualize import top_labels

    # keyframe time (video seconds) -> (boxes, labels)
    per_kf: dict[int, tuple[np.ndarray, list]] = {}
    keys = ava_io.timestamp_keys(preds.timestamp)
    for k in np.unique(keys):
        rows = np.nonzero(keys == k)[0]
        uniq, inv = np.unique(box_keys(preds.box[rows]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        boxes, labels = [], []
        for u in range(len(uniq)):
            r = rows[inv == u]
            boxes.append(preds.box[r[0]])
            labels.append(top_labels(preds.score[r], preds.action[r].tolist(), label_names, top_k, min_score))
        per_kf[int(k)] = (np.asarray(boxes), labels)
    kf_video_times = np.array(sorted(per_kf), dtype=np.float64) / 1000.0 - time_offset
    kf_keys = sorted(per_kf)

    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        rate = s_in.average_rate or 30
        s_out = out.add_stream(codec, rate=rate)
        w, h = s_in.codec_context.width // 2 * 2, s_in.codec_context.height // 2 * 2
        s_out.width, s_out.height, s_out.pix_fmt = w, h, "yuv420p"
        # About 1 bit per pixel: the drawn text stays legible (the codec default is far lower).
        s_out.bit_rate = max(1_000_000, int(w * h * float(rate)))
        tb = float(s_in.time_base)
        for frame in inp.decode(s_in):
            img = frame.to_ndarray(format="rgb24")[:h, :w]
            t = frame.pts * tb if frame.pts is not None else n / float(rate)
            if len(kf_video_times):
                j = int(np.argmin(np.abs(kf_video_times - t)))
                if abs(kf_video_times[j] - t) <= show_seconds + 1e-6:
                    boxes, labels = per_kf[kf_keys[j]]
                    img = annotate_frame(np.ascontiguousarray(img), boxes, labels)
            for p in s_out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(p)
            n += 1
        for p in s_out.encode():
            out.mux(p)
    return n


# ----------------------------------------------------------------------------- the command


def run_config(run_dir) -> dict:
    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{run_dir}: no config.json; is it a train-head run?")
    return json.loads(cfg_file.read_text())


def run_predict_video(args: PredictVideoArgs, echo=print) -> dict[str, Path]:
    """Detect (or read proposals), extract, predict, draw. Returns {"csv", "video", "proposals", "config"}."""
    from stagecache.extract.store import open_store
    from stagecache.pipelines.training.predict import PredictArgs, predict

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(args.run_dir)
    info = video_info(args.video)
    if args.proposals:
        props = video_proposals(args)
    else:
        props = detect_people(args, keyframe_times(args, info["duration"]), fps=info["fps"])
    if len(props) == 0:
        raise ValueError(f"{args.video}: no person found on any keyframe; nothing to predict")
    ava_io.write_proposals_csv(out / "proposals.csv", props)
    echo(f"[predict-video] {len(props)} person boxes on {len(np.unique(props.keys()))} keyframes")

    tmp = Path(tempfile.mkdtemp(prefix="predict_video_", dir=out))
    try:
        store_path = extract_video_store(args, cfg, props, tmp, echo)
        csv_path = out / f"{args.video_name}_predictions.csv"
        predict(PredictArgs(run_dir=args.run_dir, store=str(store_path), out=str(csv_path), boxes="proposals",
                            score_threshold=args.score_threshold, device=args.device))
        store = open_store(str(store_path))
        names = dict(zip((int(i) for i in store.attrs["label_ids"]), store.attrs["label_names"]))
    finally:
        if not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)
    preds = ava_io.read_predictions(csv_path)
    mp4 = out / f"{args.video_name}_annotated.mp4"
    n = write_annotated_video(args.video, mp4, preds, names, time_offset=args.time_offset, top_k=args.top_k,
                              min_score=args.min_score, show_seconds=args.show_seconds)
    echo(f"[predict-video] wrote {csv_path} and {mp4} ({n} frames)")
    (out / "predict_video.json").write_text(json.dumps(asdict(args), indent=2))
    return {"csv": csv_path, "video": mp4, "proposals": out / "proposals.csv", "config": out / "predict_video.json"}


def _backbone_attrs(cfg: dict, store) -> tuple[str, dict]:
    """The backbone group (name, attrs) the run was trained on, from its training store (opened)."""
    groups = cfg.get("backbones") or [g for g in store.groups if g != "base" and "actor_pooled" in store.array_info(g)]
    if len(groups) != 1:
        raise ValueError(f"run uses backbone groups {groups}; predict-video supports runs on one backbone")
    return groups[0], dict(store.groups[groups[0]])


_MATCH_KEYS = ("backbone", "channels", "stride", "sampling", "config", "levels", "context_grid", "roi_resolution",
               "roi_aligned", "res5_dilation")


def backbone_overrides(attrs: dict) -> tuple[dict, dict]:
    """(backbone_kwargs, sampling_overrides) that rebuild the backbone a store group was extracted with:
    the recorded constructor config and sampling minus the registry defaults (built on the meta
    device, so no weights are allocated)."""
    import torch

    from stagecache.extract.backbones import build_backbone

    with torch.device("meta"):
        ref = build_backbone(attrs["backbone"], res5_dilation=bool(attrs.get("res5_dilation", False))).metadata()
    ref_cfg = ref["config"]
    kwargs = {k: v for k, v in (attrs.get("config") or {}).items() if ref_cfg.get(k) != v}
    ref_s = ref["sampling"]
    sampling = {k: v for k, v in (attrs.get("sampling") or {}).items() if ref_s.get(k) != v}
    return kwargs, sampling


def extract_video_store(args: PredictVideoArgs, cfg: dict, props: ava_io.Proposals, tmp: Path, echo) -> Path:
    """A one-video store of the run's backbone features on `props`' boxes, via extract.features.run_extract,
    with the backbone configuration recorded in the run's training store; the new store's group
    attributes are checked against the training store's so the head sees the same kind of features."""
    from stagecache.extract.features import run_extract
    from stagecache.extract.features_args import ExtractArgs
    from stagecache.extract.store import open_store
    from stagecache.pipelines.training.steps import resolve_device

    tstore = open_store(cfg["train_store"])
    group, attrs = _backbone_attrs(cfg, tstore)
    if attrs.get("source") == "synthetic" or "backbone" not in attrs:
        raise ValueError(f"the run {args.run_dir} was trained on synthetic features, not on a video backbone")
    if attrs.get("layer_of"):  # the extraction below writes the last block's features under the group's name
        raise ValueError(f"the run {args.run_dir} was trained on layer group {group} (block {attrs.get('layer')} of "
                         f"{attrs['layer_of']}); predict-video supports runs on a backbone's last block only: "
                         "extract the video with `extract features --layers` and use `predict`")
    if attrs.get("random_init"):
        if not args.backbone_random_init:
            raise ValueError("the run's store was extracted with a RANDOM-WEIGHT backbone; pass "
                             "--backbone-random-init to reproduce it (tests and demo only)")
        checkpoint = None
    else:
        if not args.backbone_checkpoint:
            raise ValueError(f"pass --backbone-checkpoint: the run's store was extracted from checkpoint "
                             f"{attrs.get('checkpoint')!r} (the store records its file name only)")
        checkpoint = args.backbone_checkpoint
        if Path(checkpoint).name != attrs.get("checkpoint"):
            echo(f"[predict-video] WARNING: checkpoint {Path(checkpoint).name} differs from the store's "
                 f"{attrs.get('checkpoint')}")
    (tmp / "videos").mkdir(parents=True, exist_ok=True)
    video = tmp / "videos" / f"{args.video_name}{Path(args.video).suffix}"
    try:
        video.symlink_to(Path(args.video).resolve())
    except OSError:
        shutil.copyfile(args.video, video)
    ava_io.write_proposals_csv(tmp / "proposals.csv", props)
    lm = tmp / "label_map.pbtxt"
    ava_io.write_label_map(lm, ava_io.LabelMap(ids=[int(i) for i in tstore.attrs["label_ids"]],
                                               names=list(tstore.attrs["label_names"])))
    kwargs, sampling = backbone_overrides(attrs)
    base = tstore.groups.get("base", {})
    store_path = tmp / "video.zarr"
    obj_kw = {"weights": args.object_weights} if args.object_weights else {}
    eargs = ExtractArgs(
        split="predict", videos=str(tmp / "videos"), label_map=str(lm), out=str(store_path),
        proposals=str(tmp / "proposals.csv"), person_detector="precomputed", objects=args.objects,
        object_detector_kwargs=obj_kw, backbone=attrs["backbone"], group=group, checkpoint=checkpoint,
        random_init=checkpoint is None, res5_dilation=bool(attrs.get("res5_dilation", False)),
        backbone_kwargs=kwargs, sampling_overrides=sampling, save=tuple(attrs.get("levels") or ()),
        context_grid=attrs.get("context_grid"), roi_resolution=int(attrs.get("roi_resolution", 7)),
        roi_aligned=bool(attrs.get("roi_aligned", True)), time_offset=args.time_offset,
        fps=float(base.get("fps", 30.0)), device=str(resolve_device(args.device)), num_workers=1, progress=False,
        trust_pickle=args.trust_pickle)
    echo(f"[predict-video] extracting {group} features ({attrs['backbone']})")
    summary = run_extract(eargs)
    if summary.get("failed"):
        raise ValueError(f"feature extraction failed on {args.video}: {summary['failed']}")
    got = open_store(str(store_path)).groups[group]
    diff = [k for k in _MATCH_KEYS if json.dumps(got.get(k), sort_keys=True) != json.dumps(attrs.get(k), sort_keys=True)]
    if diff:
        raise ValueError(f"the video's features differ from the run's store in {diff}; cannot predict consistently")
    return store_path

