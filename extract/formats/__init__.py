"""AVA file formats, one module per family; `extract.ava_io` re-exports the public API."""
