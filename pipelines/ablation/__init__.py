"""`ablate`: sweeps of train-head runs (spec, runner, report)."""
