"""The Zarr v3 feature store: the one contract between extraction (stage 1) and the heads (stage 2).

Layout and guarantees: docs/STORE_SCHEMA.md. Modules: `writer` (StoreWriter, write_group, sizes),
`read` (open_store, FeatureStore, Tables), `compact` (compaction and garbage collection),
`commit` (the commit protocol and kill hook), `lock` (one live writer per rank), `io` (files,
fragments, chunk readers), `schema` (levels: store array <-> HeadInput field). Import from this
package; reach into a sub-module only for an internal.
"""
from stagecache.extract.store.commit import KILL_ENV
from stagecache.extract.store.compact import compact
from stagecache.extract.store.io import SCHEMA_VERSION, Location, StoreError
from stagecache.extract.store.read import FeatureStore, Tables, open_store
from stagecache.extract.store.schema import LEVEL_OF_ARRAY, LEVELS, Level
from stagecache.extract.store.writer import (BASE_ARRAYS, VOLATILE_ATTRS, StoreWriter, estimate_bytes, format_bytes,
                                  write_group)

__all__ = ["SCHEMA_VERSION", "StoreError", "StoreWriter", "write_group", "open_store", "FeatureStore",
           "Tables", "estimate_bytes", "format_bytes", "BASE_ARRAYS", "VOLATILE_ATTRS", "KILL_ENV",
           "Location", "compact", "LEVELS", "LEVEL_OF_ARRAY", "Level"]
