"""The tools around a run: visualize, predict-video, demo, cache tools."""
