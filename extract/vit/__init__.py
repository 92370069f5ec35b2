"""Video transformer backbones (VideoMAE, VideoMAE V2, V-JEPA 2) built from transformers' model classes:
`specs` (names, sizes, sampling; `--layers` parsing and the layer group names), `model` (`ViTBackbone`,
the factories merged into `extract.backbones.BACKBONES`), `weights` (their checkpoint files). Importing
this package does not import transformers: a factory does, when a ViT backbone is built."""
from stagecache.extract.vit.model import VIT_BACKBONES, ViTBackbone, build_vit
from stagecache.extract.vit.specs import VIT_SPECS, ViTSpec, layer_group, parse_layers

__all__ = ["VIT_BACKBONES", "VIT_SPECS", "ViTBackbone", "ViTSpec", "build_vit", "layer_group", "parse_layers"]
