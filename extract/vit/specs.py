"""The video transformers `extract features --backbone` offers: architecture and clip sampling per
name, checked against each model's own code (nothing here imports transformers).

VideoMAE (MCG-NJU/VideoMAE `modeling_finetune.py` ViT-B/L/H, patch 16, tubelet 2, LayerNorm eps
1e-6) and VideoMAE V2's giant encoder (OpenGVLab/VideoMAEv2 `vit_giant_patch14_224`: width 1408,
depth 40, 16 heads, mlp ratio 48/11 = 6144 hidden, patch 14, tubelet 2) are the same block: pre-norm
attention with a fused qkv projection (biases for q and v only) and a GELU MLP, fixed sine-cosine
position embeddings of the 224 x 224, 16-frame pretraining grid. So all four run in transformers'
`VideoMAEModel` with the sizes above (`intermediate_size` = mlp ratio x width); its final
`layernorm` is the original encoder's `norm` (`use_mean_pooling=False`).

Their AVA sampling is MCG-NJU/VideoMAE-Action-Detection's (`data/transforms.py` TransformsCfg and
`alphaction/dataset/transforms/video_transforms.py`): 16 frames 4 apart around the keyframe (there,
by `_decode_video_data` + `TemporalCrop`, frames keyframe - 31 ... keyframe + 29 at 30 fps; here the
project's one clip index, PySlowFast's, keyframe - 32 ... keyframe + 28: one frame earlier), the
short side resized to 256 with the aspect kept (MAX_SIZE_TEST 464 is configured but the cap is
commented out in `Resize.get_size`; AVA's 16:9 frames give 455 anyway), pixels normalised with
PIXEL_MEAN [122.7717, 115.9465, 102.9801] / PIXEL_STD 57.375 on the 0-255 scale, RGB. The token grid
is then 8 x 16 x 28 (patch 16) or 8 x 18 x 32 (VideoMAE V2-g, patch 14), and the position
embeddings are interpolated to it (extract/vit/model.py). VideoMAE V2 has no AVA code of its own; it
takes VideoMAE's.

V-JEPA 2 (facebookresearch/vjepa2 `src/models/vision_transformer.py`: vit_large 1024 x 24, 16 heads;
vit_huge 1280 x 32, 16 heads; vit_giant_xformers 1408 x 40, 22 heads, mlp ratio 48/11; patch 16,
tubelet 2, qkv with biases, RoPE and no position embedding) runs in transformers' `VJEPA2Model`,
encoder only. Its frozen-evaluation sampling (`configs/eval/vitl/k400.yaml`, `vitg-384/k400.yaml`):
16 frames, frame_step 4, resolution 256 (384 for the vitg-384 checkpoint), ImageNet mean/std. The
original encoder takes non-square inputs; transformers' RoPE derives a token's row and column from
`config.crop_size // patch_size` alone, so only square clips are right there: the frame is resized
to crop_size x crop_size (`square`; RoPE has no weights that depend on the size, so another square
side only changes `crop_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

from stagecache.core.errors import UserError
from stagecache.extract.backbone_base import Sampling

# VideoMAE-Action-Detection TransformsCfg.PIXEL_MEAN / PIXEL_STD on the 0-255 scale, here on 0-1
VIDEOMAE_AVA_MEAN = (122.7717 / 255.0, 115.9465 / 255.0, 102.9801 / 255.0)
VIDEOMAE_AVA_STD = (57.375 / 255.0,) * 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # vjepa2 evals' DEFAULT_NORMALIZATION
IMAGENET_STD = (0.229, 0.224, 0.225)

VIDEOMAE_AVA = Sampling(frames=16, rate=4, short_side=256, mean=VIDEOMAE_AVA_MEAN, std=VIDEOMAE_AVA_STD)
VJEPA2_EVAL = Sampling(frames=16, rate=4, short_side=256, square=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)

FAMILIES = ("videomae", "vjepa2")


@dataclass(frozen=True)
class ViTSpec:
    """One named video transformer: its transformers family, sizes and AVA / evaluation sampling."""

    family: str  # "videomae" (VideoMAEModel) | "vjepa2" (VJEPA2Model)
    width: int
    depth: int
    heads: int
    mlp: int  # MLP hidden width (mlp ratio x width)
    patch: int
    sampling: Sampling
    tubelet: int = 2
    image_size: int = 224  # VideoMAE: the pretraining side its position embeddings were made for

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"ViT family {self.family!r}; valid: {', '.join(FAMILIES)}")


VIT_SPECS: dict[str, ViTSpec] = {
    "videomae_vit_b": ViTSpec("videomae", 768, 12, 12, 3072, 16, VIDEOMAE_AVA),
    "videomae_vit_l": ViTSpec("videomae", 1024, 24, 16, 4096, 16, VIDEOMAE_AVA),
    "videomae_vit_h": ViTSpec("videomae", 1280, 32, 16, 5120, 16, VIDEOMAE_AVA),
    "videomae_v2_g": ViTSpec("videomae", 1408, 40, 16, 6144, 14, VIDEOMAE_AVA),
    "vjepa2_vit_l": ViTSpec("vjepa2", 1024, 24, 16, 4096, 16, VJEPA2_EVAL),
    "vjepa2_vit_h": ViTSpec("vjepa2", 1280, 32, 16, 5120, 16, VJEPA2_EVAL),
    "vjepa2_vit_g": ViTSpec("vjepa2", 1408, 40, 22, 6144, 16, VJEPA2_EVAL),
    "vjepa2_vit_g_384": ViTSpec("vjepa2", 1408, 40, 22, 6144, 16,
                                Sampling(frames=16, rate=4, short_side=384, square=True,
                                         mean=IMAGENET_MEAN, std=IMAGENET_STD)),
}


def layer_group(group: str, layer: int) -> str:
    """The store group holding block `layer`'s pooled features beside `group` (`videomae_vit_b.l8`)."""
    return f"{group}.l{layer}"


def parse_layers(text: str | tuple | list | None) -> tuple[int, ...] | str:
    """`--layers` value: "8,16,24" -> (8, 16, 24); "all" -> "all"; empty -> ()."""
    if text is None:
        return ()
    if isinstance(text, (tuple, list)):
        text = ",".join(str(t) for t in text)
    text = text.strip()
    if text == "all":
        return "all"
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--layers: {part!r} is not a block number >= 1 (give e.g. 8,16,24 or all)")
        out.append(int(part))
    return tuple(sorted(set(out)))


class LayersError(UserError, ValueError):
    """`--layers` names blocks the backbone does not have (or a backbone without per-layer features)."""


def resolve_layers(layers: tuple[int, ...] | str, num_layers: int, backbone: str) -> tuple[int, ...]:
    """`parse_layers`' value for a backbone with `num_layers` blocks: "all" -> 1..num_layers."""
    if not layers:
        return ()
    if num_layers == 0:
        raise LayersError(f"--layers: backbone {backbone} has no per-layer features (the ViT backbones do: "
                          f"{', '.join(VIT_SPECS)})")
    if layers == "all":
        return tuple(range(1, num_layers + 1))
    bad = [n for n in layers if n > num_layers]
    if bad:
        raise LayersError(f"--layers: backbone {backbone} has blocks 1..{num_layers}, not {bad[0]}")
    return tuple(layers)
