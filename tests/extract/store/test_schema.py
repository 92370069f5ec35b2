"""The level table names real HeadInput fields and the store's array naming (axis prefixes)."""
from dataclasses import fields

from stagecache.extract.store import LEVEL_OF_ARRAY, LEVELS
from stagecache.extract.store.io import axis_of
from stagecache.heads.batch import HeadInput


def test_levels_name_head_input_fields_and_store_arrays():
    head_fields = {f.name for f in fields(HeadInput)}
    assert list(LEVELS) == ["roi", "temporal", "context"]
    for name, level in LEVELS.items():
        assert level.name == name
        assert level.field in head_fields, level
        assert LEVEL_OF_ARRAY[level.array] is level
    assert {lv.array: axis_of(lv.array) for lv in LEVELS.values()} == {
        "actor_roi": "actor", "actor_temporal": "actor", "kf_context": "kf"}
