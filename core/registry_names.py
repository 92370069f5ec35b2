"""The names of the registries a command's options list (`--help`, choices), known without importing
torch, so that `<command> --help` answers at once (issue 32). Each registry stays the one home of
its entries, beside its factories; these are copies of its keys, in its order, and
tests/core/test_registry_names.py keeps each equal to its registry: a new entry is added in both
places (the test names the one to fix)."""
from __future__ import annotations

BACKBONE_NAMES = ("slowfast_r50", "slowfast_r101", "slowfast_r101_16x8", "slowfast_r50_detection", "slow_r50",
                  "i3d_r50", "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "csn_r101", "mvit_b", "videomae_vit_b",
                  "videomae_vit_l", "videomae_vit_h", "videomae_v2_g", "vjepa2_vit_l", "vjepa2_vit_h",
                  "vjepa2_vit_g", "vjepa2_vit_g_384", "slowfast", "slow", "i3d", "x3d", "csn", "mvit")
"""extract.backbones.BACKBONES"""
HEAD_NAMES = ("linear", "stage", "acrn", "acar", "acar_rn", "igmn", "tonly", "sonly", "sto", "lfb")
"""heads.HEADS"""
LOSS_NAMES = ("bce", "pose_softmax", "softmax")
"""pipelines.training.losses.LOSSES"""
TUBE_DATASET_NAMES = ("jhmdb", "ucf24", "multisports")
"""extract.datasets.TUBE_DATASETS"""
PERSON_DETECTOR_NAMES = ("torchvision", "detectron2", "precomputed")
"""extract.detectors.PERSON_DETECTORS"""
OBJECT_DETECTOR_NAMES = ("vg", "vg-detectron2", "precomputed", "none")
"""extract.detectors.OBJECT_DETECTORS"""
VG_POSTPROCESS_NAMES = ("caffe", "fork-demo")
"""extract.detectors.vg_postprocess.VG_POSTPROCESS"""
SAMPLING_NAMES = ("blocks", "random")
"""pipelines.training.split_batches.SAMPLINGS"""
SOURCE_NAMES = ("auto", "resident", "streamed")
"""pipelines.training.sources.SOURCES"""
LEVEL_NAMES = ("roi", "temporal", "context")
"""extract.store.schema.LEVELS (the store's optional feature levels)"""
