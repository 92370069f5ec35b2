"""Stage 1: video reading, clip sampling, backbones, detectors, RoI pooling, store writing."""
__version__ = "0.1.0"
