"""Click commands, one module per area; assembled in pipelines/cli.py."""
