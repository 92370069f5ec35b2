"""The commands: training loop, evaluation, ablations, demo, and the CLI."""
