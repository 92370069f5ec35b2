import os

import pytest

from core.atomic import TMP_PREFIX, atomic_open, atomic_path, atomic_write_bytes


def test_atomic_open_replaces_only_on_success(tmp_path):
    p = tmp_path / "out.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]  # the temporary file is gone too
    with atomic_open(p, "w") as f:
        f.write("new\n")
    assert p.read_text() == "new\n" and os.listdir(tmp_path) == ["out.csv"]


def test_atomic_path_is_a_hidden_sibling_that_keeps_the_extension(tmp_path):
    p = tmp_path / "parts" / "v.npz"
    p.parent.mkdir()
    with atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(p.parent)  # same file system: the rename is atomic
        name = os.path.basename(tmp)
        assert name.startswith(TMP_PREFIX) and name.endswith("-v.npz") and not p.exists()
        open(tmp, "wb").write(b"x")
    assert p.read_bytes() == b"x"
    atomic_write_bytes(p, b"yz")
    assert p.read_bytes() == b"yz" and os.listdir(p.parent) == ["v.npz"]
