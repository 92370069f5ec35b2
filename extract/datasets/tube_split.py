"""One split of JHMDB-21 / UCF101-24 as `extract features` inputs: the GT rows and video paths read by
`tubes_pkl`, and the jittered GT proposals of `tube_boxes` (`extract features --gt-jitter`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stagecache.extract import ava_io
from stagecache.extract.datasets.tube_boxes import jittered_gt_proposals
from stagecache.extract.datasets.tubes_pkl import (check_tube_videos, dataset_spec, find_tube_videos,
                                                   parse_split, read_tube_pickle, to_annotations)


@dataclass
class TubeInputs:
    """What `extract features` takes from a tube dataset instead of the AVA files."""

    label_map: ava_io.LabelMap
    annotations: ava_io.Annotations
    videos: dict[str, tuple[Path, float]]  # the split's videos found under --videos
    fps: float
    proposals: ava_io.Proposals | None = None  # jittered GT copies (extract/datasets/tube_boxes.py)


def tube_inputs(dataset: str, annotations: str, split: str, videos_root: str, *, fps: float | None = None,
                frame_stride: int | None = None, trust: bool = False, gt_jitter: float = 0.0,
                gt_jitter_copies: int = 1, seed: int = 0) -> TubeInputs:
    """The label map, GT rows, jittered GT proposals (gt_jitter > 0) and video paths of one
    split/side (`split` = train<N> / test<N>)."""
    spec = dataset_spec(dataset)
    side, index = parse_split(split)
    gt = read_tube_pickle(annotations, trust=trust)
    vids = gt.videos(side, index)
    fps = spec.fps if fps is None else float(fps)
    ann = to_annotations(gt, vids, fps=fps, frame_stride=frame_stride or 1)
    props = None
    if gt_jitter > 0:
        props = jittered_gt_proposals(gt, vids, fps=fps, jitter=gt_jitter, copies=gt_jitter_copies, seed=seed,
                                      frame_stride=frame_stride or 1)
    found = find_tube_videos(videos_root, spec, vids)
    check_tube_videos(gt, found, spec)
    return TubeInputs(gt.label_map(), ann, found, fps, props)
