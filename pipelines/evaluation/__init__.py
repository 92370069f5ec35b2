"""AVA frame-mAP protocols (official ActivityNet, PySlowFast, MMAction2); public entry: `pipelines.evaluation.ava`."""
from stagecache.pipelines.evaluation.protocols import PROTOCOLS, frame_map_arrays

__all__ = ["PROTOCOLS", "frame_map_arrays"]
