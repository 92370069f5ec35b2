"""Label maps (pbtxt), re-exported by `extract.ava_io`."""
from __future__ import annotations

import re
from dataclasses import dataclass

from stagecache.extract.formats.csv_table import AvaFormatError


# ----------------------------------------------------------------------------- label map

@dataclass
class LabelMap:
    ids: list[int]
    names: list[str]

    def __post_init__(self):
        self.ids = [int(i) for i in self.ids]
        self.names = [str(n) for n in self.names]
        if len(self.ids) != len(self.names):
            raise ValueError(f"LabelMap: {len(self.ids)} ids but {len(self.names)} names")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("LabelMap: duplicate ids")

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, label_id: int) -> str:
        return self.names[self.ids.index(int(label_id))]


_ITEM_RE = re.compile(r"item\s*\{(.*?)\}", re.S)
_FIELD_RE = re.compile(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s}]+)")


def read_label_map(path) -> LabelMap:
    """pbtxt with `item { name: "..." id: N }` or `item { name: "..." label_id: N label_type: T }`."""
    text = open(path).read()
    ids, names = [], []
    for m in _ITEM_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        kv = {k: v for k, v in _FIELD_RE.findall(m.group(1))}
        raw_id = kv.get("id", kv.get("label_id"))
        if "name" not in kv or raw_id is None:
            raise AvaFormatError(path, line, "label map item needs `name` and `id` (or `label_id`)")
        try:
            ids.append(int(raw_id))
        except ValueError:
            raise AvaFormatError(path, line, f"label id is not an integer: {raw_id!r}") from None
        names.append(kv["name"][1:-1] if kv["name"][:1] in "\"'" else kv["name"])
        if ids[-1] in ids[:-1]:
            raise AvaFormatError(path, line, f"duplicate label id {ids[-1]}")
    if not ids:
        raise AvaFormatError(path, None, "no `item { ... }` entries found in label map")
    return LabelMap(ids, names)


def write_label_map(path, label_map: LabelMap) -> None:
    with open(path, "w") as f:
        for i, n in zip(label_map.ids, label_map.names):
            f.write('item {\n  name: "%s"\n  id: %d\n}\n' % (n.replace('"', '\\"'), i))
