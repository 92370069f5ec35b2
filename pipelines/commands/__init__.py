"""Click commands, one module per area; assembled in pipelines/commands/cli.py."""
